"""bench-extract on CPU with the tiny model: the three paths run and the targets are reported."""

import json

import typer
from typer.testing import CliRunner

from audistill.tools.bench.extract import register, summary


def test_bench_extract_cli_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = typer.Typer()
    register(app)

    @app.command()
    def _other():  # a second command keeps typer from collapsing the app into one command
        pass

    r = CliRunner().invoke(
        app,
        [
            "bench-extract",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--minutes",
            "0.2",
            "--naive-minutes",
            "0.05",
            "--rss-minutes",
            "0",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("a_bare_forward_sps", "b_extract_sps", "c_naive_sps"):
        assert out[k] > 0
    assert out["b_over_a"] == out["b_extract_sps"] / out["a_bare_forward_sps"]
    assert out["b_over_c"] == out["b_extract_sps"] / out["c_naive_sps"]
    assert isinstance(out["target_b_ge_0.85a"], bool) and isinstance(out["target_b_ge_3c"], bool)
    assert 0 < out["variants"][0]["padding_efficiency"] <= 1
    assert all(0 < e <= 1 for e in out["a_padding_efficiency"].values())
    assert out["variants"][0]["pace"] in ("batches", "run")  # one shard: no commit-to-commit pace
    assert (
        out["audio_seconds"] >= 12 and out["failed"] == 0 and 2 < out["bits_per_value"] <= 10
    )  # int8-delta
    assert out["writer_kind"] == "thread" and out["levers"] == {}
    # compute: FLOPs per audio second, the measured peak, and the share of it (a) and (b) reach
    assert (
        out["flops_per_audio_second"] > 1e6
        and out["peak_flops"] > 1e6
        and out["peak_dtype"] == "float32"
    )
    assert (
        out["a_mfu"]
        == out["a_bare_forward_sps"] * out["flops_per_audio_second"] / out["peak_flops"]
    )
    assert out["b_mfu"] == out["b_extract_sps"] * out["flops_per_audio_second"] / out["peak_flops"]
    assert out["device_limit_sps"] == out["peak_flops"] / out["flops_per_audio_second"]
    assert out["audio_hours_per_device_hour"] == out["b_extract_sps"]
    assert out["forward_10x20_sps"] > 0
    assert (
        out["forward_10x20_mfu"]
        == out["forward_10x20_sps"] * out["flops_per_audio_second"] / out["peak_flops"]
    )
    lines = summary(out)  # the plain-text figures gpu-session.sh prints
    assert any(x.startswith("(a) bare forward, 200 s") for x in lines) and any(
        "MFU" in x for x in lines
    )
    assert sum(x.startswith("(b) extract") for x in lines) == len(out["variants"]) == 1


def test_forward_flops_count_the_model(tmp_path):
    """FlopCounterMode on the meta device: the tiny WavLM's forward FLOPs per audio second grow with
    its width, and twice the layers of the encoder cost more but less than twice (the convolutional
    feature encoder is shared)."""
    from audistill.tools.bench import extract as bench

    f = bench.forward_flops(bench.make_model("tiny", tmp_path / "m"), "all")
    cfg = dict(bench.MODELS["tiny"])
    bench.MODELS["deeper"] = {**cfg, "num_hidden_layers": 8}
    try:
        g = bench.forward_flops(bench.make_model("deeper", tmp_path / "m2"), "all")
    finally:
        del bench.MODELS["deeper"]
    assert 1e7 < f < g < 2 * f


def test_matmul_peak_measures_the_device():
    import torch

    from audistill.tools.bench.extract import matmul_peak

    assert 1e8 < matmul_peak("cpu", torch.float32, size=256, seconds=0.05) < 1e14


def test_speed_levers_reach_the_teacher(tmp_path, monkeypatch):
    """--precision / --bucket-seconds become the bench teacher's spec fields, named in the
    result."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = typer.Typer()
    register(app)

    @app.command()
    def _other():
        pass

    r = CliRunner().invoke(
        app,
        [
            "bench-extract",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--minutes",
            "0.1",
            "--naive-minutes",
            "0.02",
            "--rss-minutes",
            "0",
            "--no-ceiling",
            "--precision",
            "weights",
            "--bucket-seconds",
            "2",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (
        out["levers"] == {"precision": "weights", "bucket_seconds": 2.0}
        and out["peak_dtype"] == "bfloat16"
    )
    assert out["b_extract_sps"] > 0 and out["failed"] == 0
    bad = CliRunner().invoke(app, ["bench-extract", "--compile", "fast"])
    assert bad.exit_code != 0


def test_a_failing_variant_is_reported_and_fails_the_command(tmp_path, monkeypatch):
    """One (b) variant failing (say, process writers on a machine without shared memory) leaves
    the others measured and printed, names the failure, and exits 1."""
    import inspect

    import audistill.tools.bench.extract as bench

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = bench.full_extract

    def flaky(*args, **kwargs):
        if inspect.signature(real).bind(*args, **kwargs).arguments["writer_kind"] == "process":
            raise OSError("no space left on /dev/shm")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "full_extract", flaky)
    app = typer.Typer()
    register(app)

    @app.command()
    def _other():
        pass

    r = CliRunner().invoke(
        app,
        [
            "bench-extract",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--minutes",
            "0.2",
            "--writer-kind",
            "thread,process",
            "--naive-minutes",
            "0.05",
            "--rss-minutes",
            "0",
            "--no-ceiling",
            "--json",
        ],
    )
    assert r.exit_code == 1
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [v["writer_kind"] for v in out["variants"]] == ["thread"] and out["b_extract_sps"] > 0
    assert (
        len(out["errors"]) == 1
        and "process writers" in out["errors"][0]
        and "/dev/shm" in out["errors"][0]
    )


def test_gpu_session_script_parses_and_names_its_steps():
    """tools/bench/gpu-session.sh (the GPU check) is valid bash; without a command it prints its
    usage (the steps and their time limits) and exits 2."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "tools" / "bench" / "gpu-session.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert r.returncode == 2
    for step in (
        "bench-extract",
        "bench-train",
        "pytest -m gpu",
        "prepare",
        "BENCH_S",
        "COMPILE_S",
    ):
        assert step in r.stdout, step
