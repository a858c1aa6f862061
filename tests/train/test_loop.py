import json

import pytest

from audistill.train.config import from_dict
from audistill.train.errors import BankMismatchError, ConfigError
from audistill.train.logs import read_log
from audistill.train.loop import train

from .conftest import tiny_config


def test_tiny_student_trains_and_loss_falls(tiny_bank, tmp_path):
    cfg = from_dict(
        tiny_config(
            tiny_bank,
            str(tmp_path / "runs"),
            **{
                "optim.max_steps": 14,
                "bank.val_shards": ["s002"],
                "log.val_every": 7,
                "log.tensorboard": True,
            },
        )
    )
    out = train(cfg)
    losses = out["losses"]
    assert len(losses) == 14
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses
    rows = read_log(cfg.run_dir)
    assert {
        "loss/tspeech__L02",
        "loss/tmusic__L04",
        "steps_per_s",
        "audio_h_per_s",
        "loader_wait_s",
    } <= set(rows[-1])
    vals = read_log(cfg.run_dir, "val")
    assert len(vals) == 2
    assert any(
        k.startswith("loss/t") for k in vals[-1]
    )  # unweighted per-target losses, as in training
    assert list((cfg.run_dir / "tb").glob("events.out.tfevents.*"))
    ckpt = sorted((cfg.run_dir / "checkpoints").glob("ckpt-*"))[-1]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["config"]["student"]["size"] == "tiny" and state["step"] == 14


def test_resume_follows_the_uninterrupted_loss_curve(tiny_bank, tmp_path):
    over = {"optim.max_steps": 6, "data.grad_accum": 2, "log.ckpt_every": 100}
    full = train(from_dict(tiny_config(tiny_bank, str(tmp_path / "a"), **over)))["losses"]
    cfg = from_dict(tiny_config(tiny_bank, str(tmp_path / "b"), **over))
    first = train(cfg, stop_after=3)["losses"]
    rest = train(cfg)["losses"]
    assert len(first) == 3 and len(rest) == 3
    assert first + rest == pytest.approx(full, rel=1e-5, abs=1e-6)


def test_bank_missing_a_layer_stops_with_one_message(tiny_bank, tmp_path):
    raw = tiny_config(tiny_bank, str(tmp_path / "r"))
    raw["teachers"] = [
        {"name": "tspeech", "map": [[1, 1], [2, 9]]},
        {"name": "nope"},
        {"name": "tmusic", "fingerprint": "abc"},
    ]
    with pytest.raises(BankMismatchError) as e:
        train(from_dict(raw))
    msg = str(e.value)
    assert "tspeech" in msg and "[9]" in msg and "'nope'" in msg and "fingerprint" in msg


def test_config_errors_reported_at_once(tmp_path):
    raw = tiny_config("", str(tmp_path))
    raw["optim"]["lr"] = "fast"
    raw["data"]["grad_accum"] = 0
    raw["bogus"] = {}
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    msg = str(e.value)
    assert "optim.lr" in msg and "grad_accum" in msg and "bogus" in msg and "bank.root" in msg


def test_stage2_distills_final_layer_from_stage1_checkpoint(tiny_bank, tmp_path):
    s1 = from_dict(tiny_config(tiny_bank, str(tmp_path / "s1"), **{"optim.max_steps": 2}))
    train(s1)
    ckpt = sorted((s1.run_dir / "checkpoints").glob("ckpt-*"))[-1]
    raw = tiny_config(
        tiny_bank,
        str(tmp_path / "s2"),
        **{"optim.max_steps": 2, "run.stage": 2, "run.init_from": str(ckpt)},
    )
    raw["teachers"] = [{"name": "tspeech"}]
    out = train(from_dict(raw))
    rows = read_log(from_dict(raw).run_dir)
    assert [k for k in rows[-1] if k.startswith("loss/")] == ["loss/tspeech__L04"]
    assert len(out["losses"]) == 2


def test_normalized_targets_use_bank_statistics(tiny_bank, tmp_path):
    import shutil

    from audistill.shards.bank import Bank
    from audistill.shards.stats import compute_stats
    from audistill.train.loop import build

    tiny_bank = str(
        shutil.copytree(tiny_bank, tmp_path / "bank")
    )  # the fixture's bank stays as it is
    raw = tiny_config(
        tiny_bank, str(tmp_path / "n"), **{"optim.max_steps": 2, "distill.normalize_targets": True}
    )
    bank = Bank.open(tiny_bank)
    if bank.catalog.stats:  # start from a bank without statistics
        bank.catalog.stats = {}
        bank.save_catalog()
    with pytest.raises(ConfigError, match="shards stats"):
        train(from_dict(raw))
    compute_stats(tiny_bank)
    cfg = from_dict(raw)
    import torch

    model = build(cfg, torch.device("cpu"))[0]
    stats = Bank.open(tiny_bank).catalog.stats
    (t, layer) = model.normalized[0]
    mean = torch.tensor(stats[t][str(layer)]["mean"])
    z = mean + 2 * torch.tensor(stats[t][str(layer)]["std"])
    out = model.normalize({"targets": {t: {layer: z[None, None]}}})
    assert torch.allclose(out["targets"][t][layer], torch.full_like(z, 2.0)[None, None], atol=1e-3)
    assert len(train(cfg)["losses"]) == 2
