"""bench-catalog on a small bank: schema 2 is smaller than schema 1 and reads back the same; a sync
of an up-to-date catalog reads nothing."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from audistill.tools.bench.catalog import register


def test_bench_catalog_prints_every_figure():
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["bench-catalog", "--shards", "60", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["shards"] == r["records_read"] == 60 and r["files_per_shard"] > 10
    assert r["catalog_mb"] * 5 < r["catalog_mb_before"] and r["memory_mb"] < r["memory_mb_before"]
    assert all(
        r[k] > 0
        for k in (
            "encode_s",
            "encode_s_before",
            "open_s",
            "open_s_before",
            "read_every_record_s",
            "sync_s",
        )
    )
    res = CliRunner().invoke(app, ["bench-catalog", "--shards", "20"])
    assert res.exit_code == 0 and "schema 2" in res.output and "sync now" in res.output, res.output
