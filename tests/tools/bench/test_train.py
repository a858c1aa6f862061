"""bench-train runs end to end on the CPU with a tiny student and prints one JSON object."""

import json

import typer
from typer.testing import CliRunner

from audistill.tools.bench.train import register


def test_bench_train_tiny_cpu_json():
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:  # a second command, so bench-train is addressed by name
        """Unused."""

    r = CliRunner().invoke(
        app,
        [
            "bench-train",
            "--size",
            "tiny",
            "--device",
            "cpu",
            "--workers",
            "0,1",
            "--steps",
            "2",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output.strip().splitlines()[-1])
    assert (
        doc["cached"]["steps"] == 2
        and doc["cached"]["steps_per_s"] > 0
        and doc["online"]["steps_per_s"] > 0
    )
    assert set(doc["loader"]) == {"0", "1"} and all(v > 0 for v in doc["loader"].values())
    assert doc["rss_base"]["rss_mb"] > 0 and doc["rss_10x"]["rss_mb"] > 0
    assert set(doc["targets"]) == {
        "cached_faster_than_online",
        "loader_keeps_up_le4_workers",
        "rss_flat_10x_bank",
    }
    assert all(isinstance(v, bool) for v in doc["targets"].values())


def test_bench_train_loader_only_json():
    """--loader-only needs no model nor GPU: per-worker batches/s and each worker count's rate."""
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:
        """Unused."""

    r = CliRunner().invoke(
        app,
        [
            "bench-train",
            "--loader-only",
            "--size",
            "tiny",
            "--workers",
            "1",
            "--batches",
            "2",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output.strip().splitlines()[-1])
    assert doc["loader_only"] and doc["preset"] == "tiny"
    assert doc["in_process"]["batches_per_cpu_s"] > 0 and doc["per_worker_audio_s_per_s"] > 0
    assert set(doc["workers"]) == {"1"} and doc["workers"]["1"]["batches_per_s"] > 0
    assert isinstance(doc["targets"]["per_worker_ge_3_batches_per_s"], bool)


def test_bench_train_step_only_reports_flops_and_mfu():
    app = typer.Typer()
    register(app)

    @app.command("other")
    def other() -> None:
        """Unused."""

    r = CliRunner().invoke(
        app,
        [
            "bench-train",
            "--step-only",
            "--size",
            "tiny",
            "--device",
            "cpu",
            "--step-seconds",
            "4,8",
            "--steps",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output.strip().splitlines()[-1])
    assert [x["batch_seconds"] for x in doc["rows"]] == [4.0, 8.0]
    for x in doc["rows"]:
        assert (
            x["tflop_per_step"] > 0
            and x["steps_per_s"] > 0
            and 0 < x["mfu"] < 1.5
            and x["loss_finite"]
        )
    # the FLOPs grow with the batch (the count is of the real step, not a constant)
    assert doc["rows"][1]["tflop_per_step"] > 1.5 * doc["rows"][0]["tflop_per_step"]
