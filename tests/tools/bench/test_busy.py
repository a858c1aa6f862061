"""bench-busy runs real concurrent CPU training jobs under both OpenMP wait policies."""

from __future__ import annotations

import pytest

from audistill.tools.bench.busy import run_busy_bench


@pytest.mark.slow
def test_busy_bench_measures_both_policies():
    res = run_busy_bench(jobs=2, size="tiny", seconds=2.0, steps=2)
    assert [r["policy"] for r in res["rows"]] == ["ACTIVE", "PASSIVE"]
    for r in res["rows"]:
        assert r["alone_steps_per_s"] > 0 and len(r["busy_steps_per_s"]) == 2
        assert r["busy_total_steps_per_s"] == pytest.approx(sum(r["busy_steps_per_s"]))
    assert res["passive_over_active_busy"] > 0
