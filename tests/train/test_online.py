"""The online-teacher mode takes the same crops and gives the same targets as the bank."""

import pytest

from audistill.train.config import from_dict
from audistill.train.loop import train
from audistill.train.online import OnlineTeachers

from .conftest import make_teachers, tiny_config


def test_online_teachers_give_the_cached_loss_curve(tiny_bank, tmp_path):
    over = {"optim.max_steps": 3}
    cached = train(from_dict(tiny_config(tiny_bank, str(tmp_path / "c"), **over)))["losses"]
    online = train(
        from_dict(tiny_config(tiny_bank, str(tmp_path / "o"), **over)),
        online=OnlineTeachers(make_teachers()),
    )["losses"]
    assert online == pytest.approx(cached, rel=1e-4)


def test_the_bank_check_logs_the_same_weights_loss_against_the_bank(tiny_bank, tmp_path):
    """``run.online_check_bank``: every step also scores the same student outputs against the
    bank's targets. Against the exact bank the two losses agree to float rounding; against a 4-bit
    recode of it they differ by what the codec changed - and the check never changes training."""
    from audistill.shards.copy import recode_bank
    from audistill.train.logs import read_log

    int4 = str(tmp_path / "int4")
    recode_bank(tiny_bank, int4, "int4-group")
    teachers = OnlineTeachers(make_teachers())
    over = {"optim.max_steps": 3}
    plain = train(from_dict(tiny_config(tiny_bank, str(tmp_path / "p"), **over)), online=teachers)
    gaps = {}
    for name, bank in (("exact", tiny_bank), ("int4", int4)):
        cfg = from_dict(
            tiny_config(bank, str(tmp_path / name), **over, **{"run.online_check_bank": True})
        )
        res = train(cfg, online=teachers)
        assert res["losses"] == plain["losses"]  # the same trajectory: the check only reads
        rows = read_log(cfg.run_dir)
        assert [r["step"] for r in rows] == [1, 2, 3]
        gaps[name] = max(abs(r["loss"] - r["loss_bank"]) for r in rows)
    assert gaps["exact"] < 1e-6 < 1e-4 < gaps["int4"]


def test_online_records_describe_the_teachers():
    recs = OnlineTeachers(make_teachers()).records()
    assert recs["tmusic"].home_domain == "music" and recs["tmusic"].hop == 640


class PaddingSensitive:
    """Normalizes over the whole (padded) input, like wav2vec2-base / FCPE: batching changes it."""

    name, frame_rate, dim, num_layers, layers, pad_invariant = "pad", 50.0, 2, 1, [0], False

    def extract(self, wave, lengths):
        import torch

        z = (wave - wave.mean(1, keepdim=True))[:, : wave.shape[1] // 320 * 320].reshape(
            wave.shape[0], -1, 320
        )
        feats = torch.stack([z.mean(-1), z.std(-1)], -1)  # (B, T, 2)
        return {0: feats}, lengths // 320


def test_padding_sensitive_teachers_run_per_length_and_only_where_covered():
    import torch

    t = PaddingSensitive()
    assert OnlineTeachers.groups(t, [640, 960, 640, 320], [True, True, True, False]) == [
        [0, 2],
        [1],
    ]
    wave = torch.randn(3, 960)
    lengths = torch.tensor([960, 640, 960])
    batch = {
        "full_wave": wave,
        "full_lengths": lengths,
        "crop_start": torch.tensor([0, 320, 320]),
        "lengths": torch.tensor([640, 320, 640]),
        "wave": wave[:, :640],
        "domains": ["speech"] * 3,
        "targets": {},
        "target_lengths": {},
        "present": {},
    }
    OnlineTeachers([t]).fill(batch)
    alone = t.extract(wave[1:2, :640], lengths[1:2])[0][0]  # item 1 on its own, unpadded
    torch.testing.assert_close(batch["targets"]["pad"][0][1, :1], alone[0, 1:2])
    assert batch["target_lengths"]["pad"].tolist() == [2, 1, 2]
