"""bench-dask on a minute of audio: both task sizes run the whole corpus, and the CLI prints
JSON."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from audistill.tools.bench.dask import register


def test_bench_dask_runs_both_task_sizes():
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(
        app,
        [
            "bench-dask",
            "--minutes",
            "1",
            "--shard-seconds",
            "20",
            "--shards-per-task",
            "2",
            "--repeats",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert (
        r["shards"] >= 3 and set(r["best"]) == {"1", "2"} and all(v > 0 for v in r["best"].values())
    )
    assert r["ratio_vs_one"]["1"] == 1.0
