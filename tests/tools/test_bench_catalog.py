"""bench-catalog on a small bank: both encodings agree, a sync of an up-to-date catalog reads nothing."""

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
    assert r["shards"] == r["records_read"] == 60 and r["catalog_mb"] < r["catalog_mb_before"]
    assert all(r[k] > 0 for k in ("encode_s", "encode_s_before", "open_s", "read_every_record_s", "sync_s"))
