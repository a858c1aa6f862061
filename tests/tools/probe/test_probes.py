"""Linear probes: accuracy on separable data, chance on shuffled labels, frame-label mapping,
cross-validation folds, confidence intervals, seeded determinism, the manifest API end to end and
the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import typer
from typer.testing import CliRunner

from audistill.tools.probe import linear as lin
from audistill.tools.probe import probes as probe_mod
from audistill.tools.probe.probes import Encoder, ProbeError, probe_manifest, probe_utterance

SR = 16000


class SpectrumEncoder:
    """A tiny fake encoder at 50 Hz: layer 0 = log band energies of 20 ms frames, layer 1 = a
    fixed random projection of layer 0, layer 2 = noise that ignores the input."""

    num_layers = 3
    frame_rate = 50.0

    def __init__(self, dim: int = 24):
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(dim, dim, generator=g) / dim**0.5
        self.dim = dim

    def layers(self, wave: torch.Tensor) -> list[torch.Tensor]:
        hop = SR // 50
        t = len(wave) // hop
        frames = wave[: t * hop].reshape(t, hop)  # (T, 320)
        spec = torch.fft.rfft(frames * torch.hann_window(hop), dim=1).abs() ** 2  # (T, 161)
        bands = torch.stack(
            [b.sum(1) for b in torch.tensor_split(spec, self.dim, dim=1)], 1
        )  # (T, D)
        h0 = (bands + 1e-8).log()
        noise = torch.randn(t, self.dim, generator=torch.Generator().manual_seed(len(wave)))
        return [h0, torch.tanh(h0 @ self.proj / 10), noise]


def tone(freq: float, dur: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(dur * SR)) / SR
    return (
        0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Tones whose band is the label (utterance task 'band'); two-tone clips that switch at a
    known time (frame task 'band'); a few unlabeled frames between them."""
    root = tmp_path_factory.mktemp("probe")
    rng = np.random.default_rng(0)
    bands = {"low": 300.0, "mid": 1200.0, "high": 4000.0}
    recs = []
    for i in range(45):
        lab = list(bands)[i % 3]
        x = tone(bands[lab] * rng.uniform(0.9, 1.1), rng.uniform(0.8, 1.5), rng)
        recs.append({"id": f"u{i}", "path": f"u{i}.wav", "labels": {"band": lab}})
        sf.write(str(root / f"u{i}.wav"), x, SR)
    for i in range(12):
        a, b = rng.choice(list(bands), 2, replace=False)
        cut = rng.uniform(0.6, 1.4)
        x = np.concatenate(
            [
                tone(bands[a], cut, rng),
                np.zeros(int(0.2 * SR), np.float32),
                tone(bands[b], 2.0 - cut, rng),
            ]
        )
        recs.append(
            {
                "id": f"f{i}",
                "path": f"f{i}.wav",
                "labels": {},
                "frame_labels": {"band": [[0.0, cut, a], [cut + 0.2, 2.2, b]]},
            }
        )
        sf.write(str(root / f"f{i}.wav"), x, SR)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root / "manifest.jsonl"


def clusters(
    n: int, n_classes: int, seed: int, L: int = 3, D: int = 16
) -> tuple[torch.Tensor, list[str]]:
    """(N, L, D): only layer 1 carries the class (separable means); other layers are noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.randn(n, L, D, generator=g)
    centres = torch.randn(n_classes, D, generator=g) * 4
    x[:, 1] += centres[y]
    return x, [f"c{int(v)}" for v in y]


def test_separable_data_is_learned_and_the_right_layer_weighted():
    x, labels = clusters(150, 5, seed=0)
    r = probe_utterance(x, labels, seed=0)
    assert r["accuracy"] >= 0.9
    assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    assert int(np.argmax(r["layer_weights"])) == 1
    assert (r["n_items"], r["folds"]) == (150, 5)
    assert r["chance"] <= 0.2  # the training folds' majority class, scored on the held-out fold


def test_shuffled_labels_give_chance():
    x, labels = clusters(300, 5, seed=1)
    shuffled = list(np.random.default_rng(0).permutation(labels))
    r = probe_utterance(x, shuffled, seed=0)
    assert r["accuracy"] < 0.4
    assert r["ci95"][0] < 0.2 + 0.05  # the interval reaches down to chance (1/5)


def test_one_layer_probe_sees_only_that_layer():
    x, labels = clusters(150, 5, seed=2)
    good = probe_utterance(x[:, 1:2], labels, seed=0)
    bad = probe_utterance(x[:, 0:1], labels, seed=0)
    assert good["accuracy"] >= 0.9 and bad["accuracy"] < 0.5 and good["layer_weights"] == [1.0]


def test_frame_targets_use_frame_centres():
    idx = {"a": 0, "b": 1}
    y = lin.frame_targets([[0.0, 0.5, "a"], [0.55, 1.0, "b"], [1.0, 1.1, "unknown"]], 12, 10.0, idx)
    # centres 0.05, 0.15, ..., 1.15: 0.45 -> a; 0.55 -> b (start inclusive); 0.95 -> b; 1.05/1.15 ->
    # none
    assert y.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1]
    assert lin.frame_targets([], 3, 50.0, idx).tolist() == [-1, -1, -1]


def test_intervals_contain_the_estimate():
    for correct, n in ((0, 10), (7, 10), (10, 10), (55, 100)):
        lo, hi = lin.wilson_interval(correct, n)
        assert 0 <= lo <= correct / n <= hi <= 1
    lo, hi = lin.wilson_interval(50, 100)
    assert (lo, hi) == pytest.approx((0.404, 0.596), abs=1e-3)
    correct = np.array([8.0, 5.0, 9.0, 2.0, 7.0])
    total = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    lo, hi = lin.cluster_bootstrap_interval(correct, total, seed=0)
    assert lo <= correct.sum() / total.sum() <= hi and hi - lo > 0.1


def test_folds_are_stratified_grouped_and_cover_every_kept_item():
    labels = np.array(["a"] * 20 + ["b"] * 15 + ["c"] * 2)
    groups = np.array(
        [f"a{i // 2}" for i in range(20)] + [f"b{i}" for i in range(15)] + ["c0", "c1"]
    )
    fold = lin.grouped_folds(len(labels), 5, seed=0, labels=labels, groups=groups)
    assert (fold[-2:] == -1).all() and (fold[:-2] >= 0).all()  # class c (2 items) left out
    for g in set(groups[:-2]):
        assert len(set(fold[groups == g])) == 1, g  # a group never straddles folds
    for f in range(5):
        assert set(labels[fold == f]) == {"a", "b"}  # every fold holds every kept class
        tr, va, te = lin.fold_parts(fold, f, 5)
        assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
        assert len(tr) + len(va) + len(te) == 35
    assert np.bincount(fold[fold >= 0]).tolist() == [7, 7, 7, 7, 7]
    assert (lin.grouped_folds(37, 5, seed=0, labels=labels, groups=groups) == fold).all()
    assert not (lin.grouped_folds(37, 5, seed=1, labels=labels, groups=groups) == fold).all()
    # fewer groups than folds: empty folds are skipped, validation takes the next fold that has
    # items
    few = lin.grouped_folds(6, 5, seed=0, groups=np.array(list("xxyyzz")))
    assert len(set(few.tolist())) == 3
    for f in set(few.tolist()):
        tr, va, te = lin.fold_parts(few, f, 5)
        assert len(tr) == len(va) == len(te) == 2
    # a group labelled under two classes still keeps one fold
    shared = lin.grouped_folds(
        6, 3, seed=0, labels=np.array(list("aaabbb")), groups=np.array(list("xyzxyz"))
    )
    assert all(shared[i] == shared[i + 3] for i in range(3))


def test_cross_validation_does_not_leak_a_group():
    # each group's items share a random label and a random centre: memorizing a group would
    # score well only if its other items were in training; grouped folds keep the probe at chance
    g = torch.Generator().manual_seed(0)
    n_groups, per = 40, 4
    centres = torch.randn(n_groups, 1, 64, generator=g) * 5
    x = centres.repeat_interleave(per, 0) + 0.1 * torch.randn(n_groups * per, 1, 64, generator=g)
    labels = [
        f"c{v}"
        for v in torch.randint(0, 2, (n_groups,), generator=g).repeat_interleave(per).tolist()
    ]
    groups = [f"g{i // per}" for i in range(n_groups * per)]
    grouped = probe_utterance(x, labels, groups=groups, seed=0)
    leaky = probe_utterance(x, labels, seed=0)
    assert grouped["accuracy"] < 0.7 < 0.9 < leaky["accuracy"]
    assert grouped["ci_method"] == "group bootstrap" and leaky["ci_method"] == "wilson"


def test_probe_manifest_end_to_end(manifest):
    enc = SpectrumEncoder()
    assert isinstance(enc, Encoder)
    r = probe_manifest(enc, manifest, seed=0)
    assert set(r["tasks"]) == {"band", "frame_band"}
    utt, frm = r["tasks"]["band"], r["tasks"]["frame_band"]
    assert (
        utt["accuracy"] >= 0.9 and utt["n_classes"] == 3 and utt["n_items"] == 45
    )  # every clip scored once
    assert frm["level"] == "frame" and frm["accuracy"] >= 0.9
    assert frm["ci95"][0] <= frm["accuracy"] <= frm["ci95"][1]
    assert frm["n_items"] == 12 and frm["n_test_frames"] == sum(frm["items"]["total"]) > 12 * 80
    assert utt["items"]["ids"] == [f"u{i}" for i in range(45)]
    assert sum(utt["items"]["correct"]) == pytest.approx(utt["accuracy"] * 45)
    assert frm["items"]["ids"] == [f"f{i}" for i in range(12)]
    assert sum(frm["items"]["correct"]) / sum(frm["items"]["total"]) == pytest.approx(
        frm["accuracy"]
    )
    assert r["tasks"]["band"]["layer_weights"][2] < 0.5  # the noise layer is not the one used
    # determinism: same seed, same everything; the layer-2 (noise) probe is near chance
    assert probe_manifest(enc, manifest, seed=0) == r
    noise = probe_manifest(enc, manifest, tasks=["band"], layer=2, seed=0)["tasks"]["band"]
    assert noise["accuracy"] <= 0.67


def test_feature_cache_runs_the_encoder_once_per_clip(manifest):
    calls = []

    class Counting(SpectrumEncoder):
        def layers(self, wave):
            calls.append(len(wave))
            return super().layers(wave)

    enc = Counting()
    cache = probe_mod.FeatureCache(enc, manifest.parent)
    probe_manifest(enc, manifest, tasks=["band"], cache=cache)
    probe_manifest(enc, manifest, tasks=["band"], layer=0, seed=1, cache=cache)
    assert len(calls) == 45


def test_bad_requests_raise(manifest):
    with pytest.raises(ProbeError, match="unknown task"):
        probe_manifest(SpectrumEncoder(), manifest, tasks=["nope"])
    with pytest.raises(ProbeError, match="layer"):
        probe_manifest(SpectrumEncoder(), manifest, tasks=["band"], layer=7)


def cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test root"""

    probe_mod.register(app)
    return app


def test_cli_probe(manifest, monkeypatch):
    monkeypatch.setattr(
        probe_mod, "_load_random_student", lambda size, seed, device: SpectrumEncoder()
    )
    runner = CliRunner()
    res = runner.invoke(
        cli_app(), ["probe", str(manifest), "--random-student", "tiny", "--task", "band", "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert (
        doc["encoder"] == {"kind": "random-student", "value": "tiny"}
        and doc["tasks"]["band"]["accuracy"] >= 0.9
    )
    res = runner.invoke(
        cli_app(),
        ["probe", str(manifest), "--random-student", "tiny", "--layer", "0", "--folds", "3"],
    )
    assert res.exit_code == 0 and "band" in res.stdout and "95% CI" in res.stdout
    row = next(line for line in res.stdout.splitlines() if line.startswith("band "))
    assert row.split()[-2:] == ["45", "3"]  # every clip scored, 3 folds


def test_cli_needs_exactly_one_encoder(manifest):
    runner = CliRunner()
    res = runner.invoke(cli_app(), ["probe", str(manifest)])
    assert res.exit_code == 2 and "exactly one" in res.output
    res = runner.invoke(
        cli_app(), ["probe", str(manifest), "--student", "a", "--random-student", "b"]
    )
    assert res.exit_code == 2 and "exactly one" in res.output


def test_cli_probes_a_teacher_from_its_spec(manifest, tmp_path):
    """``--teacher SPEC.toml:NAME`` loads that teacher (a GE2E checkpoint of random weights here)
    and probes its kept layers; an ambiguous or wrong name is one line and exit 2."""
    from tests.extract.tiny_models import make_tiny_ge2e

    make_tiny_ge2e(tmp_path / "ge2e.pt")
    spec = tmp_path / "teachers.toml"
    spec.write_text(
        "".join(
            f'[[teacher]]\nname = "{name}"\nsource = "{(tmp_path / "ge2e.pt").as_posix()}"\n'
            f'kind = "ge2e"\nlayers = {layers}\ncodec = "float32"\n'
            for name, layers in (("spk", "[1, 3]"), ("top", "[3]"))
        )
    )
    runner = CliRunner()
    args = ["probe", str(manifest), "--task", "band", "--folds", "3", "--json", "--teacher"]
    res = runner.invoke(cli_app(), [*args, f"{spec}:spk"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    band = doc["tasks"]["band"]
    assert doc["num_layers"] == 2 and len(band["layer_weights"]) == 2 and band["n_test"] == 45
    res = runner.invoke(cli_app(), [*args, str(spec)])
    assert res.exit_code == 2 and "names 2 teachers (spk, top)" in res.output
    res = runner.invoke(cli_app(), [*args, f"{spec}:ghost"])
    assert res.exit_code == 2 and "no teacher 'ghost'" in res.output
