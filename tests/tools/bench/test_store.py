"""bench-store on loopback moto: every operation runs both ways and the figures are sane."""

from __future__ import annotations

import pytest

from audistill.tools.bench.store import run_store_bench

pytestmark = pytest.mark.s3


def test_bench_store_times_both_ways_and_cleans_up():
    r = run_store_bench(records=12, objects=4, repeats=1, verify_shards=2, latency_ms=5)
    assert r["moto"] and set(r["best"]) == {
        "records_one_by_one",
        "records_read_many",
        "records_head_first",
        "sizes_per_file",
        "sizes_listing",
        "move_one_by_one",
        "move_concurrent",
        "verify_per_file",
        "verify_now",
        "export_one_at_a_time",
        "export_concurrent",
    }
    assert r["verify_files"] > 2 * 10  # a real bank: ~20 files a shard
    assert all(v > 0 for v in r["best"].values()) and all(v > 0 for v in r["speedup"].values())
    assert (
        r["latency_ms"] == 5 and r["best"]["records_one_by_one"] >= 12 * 0.005
    )  # every request waited
