"""bench-plan on a small corpus: every path plans every file, the figures are per file, the CLI
prints them."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from audistill.tools.bench.plan import register, run_plan_bench


def test_bench_plan_measures_every_path_and_the_plan_memory():
    r = run_plan_bench(
        files=400, probe_workers=4, latency_ms=0.5, latency_files=100, memory_segments=5000
    )
    assert set(r["us_per_file"]) == {
        "local_one",
        "local_auto",
        "local_threads",
        "manifest",
        "slow_one",
        "slow_threads",
    }
    assert all(v > 0 for v in r["us_per_file"].values()) and r["slow_files"] == 100
    assert (
        r["us_per_file"]["slow_one"] > 500
    )  # the simulated latency is really paid, one file after another
    m = r["bytes_per_segment"]
    assert (
        m["shards"] > 3 and 0 < m["packed_b"] < m["objects_b"] / 3 and m["peak_b"] > m["packed_b"]
    )


def test_bench_plan_cli_prints_json():
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(
        app,
        [
            "bench-plan",
            "--files",
            "300",
            "--latency-files",
            "50",
            "--memory-segments",
            "2000",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["files"] == 300 and out["memory_ratio"] > 3 and out["slice_start_speedup"] > 0
