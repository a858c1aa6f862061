"""The main job end to end, shortened: real corpus, real packaged teachers, bank, students, probes, report."""

from __future__ import annotations

import json

import pytest

from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank
from audistill.tools.demo.run import quick_config, run_demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    report = run_demo(out, quick_config(), say=lines.append)
    return out, report, lines


def test_demo_writes_a_report_with_every_section(demo_run):
    out, report, lines = demo_run
    text = report.read_text()
    for heading in ("Distilled student against a randomly initialized one", "Domain-aware weighting",
                    "Target precision", "Cached against online teachers", "Teachers (reference"):
        assert heading in text
    for fig in ("loss_curves", "probes", "bank_bytes", "throughput"):
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert any(line.startswith("[6/6]") for line in lines) and str(report) in lines[-1]


def test_demo_results_are_measured_and_consistent(demo_run):
    out, _, _ = demo_run
    res = json.loads((out / "results.json").read_text())
    assert set(res["banks"]) == {"float32", "int8-delta", "int4-group", "mvq"}
    bits = {c: 8 * sum(d["bytes"] for t in b["teachers"].values() for d in t["layers"].values())
            / sum(d["frames"] * t["dim"] for t in b["teachers"].values() for d in t["layers"].values())
            for c, b in res["banks"].items()}
    assert bits["mvq"] < bits["int4-group"] < bits["int8-delta"] < bits["float32"]
    tasks = res["probes"]["omega10-float32"]["tasks"]
    assert {"domain", "pitch_class", "sound_category"} <= set(tasks)
    for r in tasks.values():
        assert 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1
    # cached and online teachers give the same targets on the same crops: the same losses
    cached, online = res["runs"]["pair-cached"]["losses"], res["runs"]["pair-online"]["losses"]
    assert len(cached) == len(online) > 0
    assert online == pytest.approx(cached, rel=2e-3)
    assert all(v > 0 for v in res["float32_val"].values())


def test_demo_bank_is_intact_and_domain_aware(demo_run):
    out, _, _ = demo_run
    assert verify_bank(str(out / "bank-float32")).ok
    reader = BankReader(str(out / "bank-float32"), audio=False)
    for sd in reader:
        if "whisper_tiny_en" in reader.teachers:
            assert ("whisper_tiny_en" in sd.features) == (sd.segment.domain == "speech")
        assert ("crepe_tiny" in sd.features) == (sd.segment.domain in ("music", "sound"))
