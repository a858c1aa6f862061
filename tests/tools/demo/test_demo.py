"""The main job end to end, shortened: real corpus, real packaged teachers, bank, students, probes,
report."""

from __future__ import annotations

import faulthandler
import json

import pytest

from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank
from audistill.tools.demo.run import (
    DemoConfig,
    demo_config,
    quick_config,
    run_demo,
    set_threads,
    usable_cores,
)

# the quick demo is one long fixture: on a busy 2-core machine it can outlast pytest's
# faulthandler_timeout (300 s), whose thread dump would then land mid-run. pytest arms that timer
# around each test and cancels it after; re-arming it here gives this run its own, longer limit
# (a hang still dumps every thread's stack)
DEMO_TIMEOUT_S = (
    1800  # a loaded 2-core machine (load 10+) took 26 min; unloaded it is a few minutes
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    faulthandler.dump_traceback_later(DEMO_TIMEOUT_S, exit=False)
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    report = run_demo(out, quick_config(), say=lines.append)
    return out, report, lines


def test_demo_writes_a_report_with_every_section(demo_run):
    out, report, lines = demo_run
    text = report.read_text()
    for heading in (
        "Claims and their status",
        "Distilled student against a randomly initialized one",
        "Domain-aware weighting",
        "Target precision",
        "Cached against online teachers",
        "Teachers (reference",
    ):
        assert heading in text
    for fig in ("loss_curves", "probes", "bank_bytes", "throughput"):
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert any(line.startswith("[6/6]") for line in lines) and str(report) in lines[-1]
    for stage in (
        "corpus: ",
        "re-encoding",
        ": training ",
        "probed ",
        "deciding the claims",
    ):  # no silent stage
        assert any(stage in line for line in lines), stage


def test_demo_results_are_measured_and_consistent(demo_run):
    out, _, _ = demo_run
    res = json.loads((out / "results.json").read_text())
    assert set(res["banks"]) == {"float32", "int8-delta", "int4-group", "mvq"}
    codes = {c: b["sizes"]["bits_per_value_codes"] for c, b in res["banks"].items()}
    assert codes["mvq"] < codes["int4-group"] < codes["int8-delta"] < codes["float32"]
    sizes = res["banks"]["mvq"]["sizes"]
    assert (
        sizes["codec_state_bytes"] > 0 and sizes["bits_per_value"] > codes["mvq"]
    )  # codebooks counted
    assert sizes["audio_bytes"] > 0 and sizes["feature_bytes"] > 0
    # what each codec bank lost against the float32 bank, per teacher layer of the real teachers
    worst = {
        c: max(r["variance_lost"] for r in res["banks"][c]["fidelity"].values())
        for c in ("int8-delta", "int4-group", "mvq")
    }
    assert set(res["banks"]["mvq"]["fidelity"]) == set(res["banks"]["int8-delta"]["fidelity"])
    assert 0 < worst["int8-delta"] < 0.01 < min(worst["int4-group"], worst["mvq"])
    assert max(worst.values()) < 1
    [probe] = res["probes"]["omega10-float32"]  # one per student seed
    tasks = probe["tasks"]
    assert {"domain", "pitch_class", "sound_category"} <= set(tasks)
    for r in tasks.values():
        assert 0 <= r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] <= 1
        assert (
            len(r["items"]["ids"]) == r["n_items"]
        )  # every labelled clip scored once (cross-validated)
    decided = res["claims"]
    assert set(decided["codecs"]) == {"int8-delta", "int4-group", "mvq"}
    assert set(decided["distilled_vs_random"]["tasks"]) == set(tasks)
    # cached and online teachers give the same targets on the same crops: the same losses
    cached, online = (
        res["runs"]["pair-cached"][0]["losses"],
        res["runs"]["pair-online"][0]["losses"],
    )
    assert len(cached) == len(online) > 0
    assert online == pytest.approx(cached, rel=2e-3)
    assert all(v > 0 for seeds in res["float32_val"].values() for v in seeds)


def test_demo_bank_is_intact_and_domain_aware(demo_run):
    out, _, _ = demo_run
    assert verify_bank(str(out / "bank-float32")).ok
    reader = BankReader(str(out / "bank-float32"), audio=False)
    for sd in reader:
        if "whisper_tiny_en" in reader.teachers:
            assert ("whisper_tiny_en" in sd.features) == (sd.segment.domain == "speech")
        assert ("crepe_tiny" in sd.features) == (sd.segment.domain in ("music", "sound"))


def test_quick_honours_the_options_it_is_given():
    cfg = quick_config(steps=3, student="mini", minutes=0.5, device="cpu", seeds=2)
    assert (cfg.steps, cfg.student, cfg.minutes, cfg.seeds) == (3, "mini", 0.5, 2)
    assert cfg.batch_seconds == quick_config().batch_seconds  # the rest stays quick
    assert demo_config(False, steps=7).steps == 7 and demo_config(False).steps == DemoConfig().steps
    with pytest.raises(ValueError, match="seeds"):
        quick_config(seeds=0)
    with pytest.raises(ValueError, match="unknown"):
        demo_config(True, colour="red")


def test_profiles_and_their_overrides():
    full = demo_config("full")
    assert (full.profile, full.seeds) == ("full", 3) and full.steps > 4 * DemoConfig().steps
    assert full.minutes > DemoConfig().minutes and demo_config().profile == "default"
    assert demo_config("full", seeds=5, device="cuda").seeds == 5  # flags apply on top
    assert quick_config().profile == "quick" and demo_config(True) == quick_config()
    with pytest.raises(ValueError, match="unknown profile"):
        demo_config("huge")


def test_cli_refuses_quick_with_full(tmp_path):
    from typer.testing import CliRunner

    from audistill.tools.cli.app import app

    res = CliRunner().invoke(app, ["demo", "--quick", "--full", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--quick and --full exclude each other" in res.output
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_bad_option_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from audistill.tools.cli.app import app

    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path / "o"), "--steps", "0"])
    assert res.exit_code == 2 and "audistill: error: demo: seeds and steps must be 1+" in res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "o"), "--batch-seconds", "0"])
    assert res.exit_code == 2 and "batch_seconds=0" in res.output
    assert not (tmp_path / "o").exists()


def test_batch_seconds_is_a_knob_on_top_of_any_profile():
    assert demo_config("default", batch_seconds=8.0).batch_seconds == 8.0
    assert demo_config("full", batch_seconds=8.0).steps == demo_config("full").steps
    assert quick_config(batch_seconds=4.0).batch_seconds == 4.0


def test_the_corpus_key_follows_the_audio_sources(monkeypatch):
    """A corpus built with fallbacks (no synthesizer, no soundfont) is not reused once the sources
    are installed: what the machine offers is part of the corpus's stage key."""
    from audistill.tools.demo import corpus_sources
    from audistill.tools.demo.run import audio_sources

    here = audio_sources()
    assert set(here) == {"voices", "recorded_speech", "music", "sounds"}
    monkeypatch.setattr(corpus_sources.shutil, "which", lambda _name: None)
    bare = audio_sources()
    assert bare["voices"] == [] and bare["music"] == "numpy-synth"
    assert (bare == here) == (here["voices"] == [] and here["music"] == "numpy-synth")


def test_threads_follow_the_usable_cores(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 0 and torch.get_num_threads() == 1
        assert set_threads(2) == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2})
    assert 1 <= usable_cores() <= 3


def test_a_rerun_reuses_every_finished_stage(demo_run):
    """Re-running into the same folder with the same options makes nothing again: no corpus, no
    extraction, no re-encoding, no training, no probe; the claims and the report come out the same.
    (Last in this file: it rewrites the folder the tests above read.)"""
    out, _, _ = demo_run
    before = json.loads((out / "results.json").read_text())
    lines: list[str] = []
    run_demo(out, quick_config(), say=lines.append)
    after = json.loads((out / "results.json").read_text())
    for made in ("  corpus: ", "  extract ", "  re-encoding", ": training ", "  probed "):
        assert not any(made in line for line in lines), made  # what making each stage says
    assert not any(line.startswith("  probing teacher") for line in lines)
    reused = [line for line in lines if line.endswith("reused (made with the same inputs)")]
    n_runs = sum(len(seeds) for seeds in after["runs"].values())
    n_probes = sum(len(seeds) for seeds in after["probes"].values())
    # the corpus, 4 banks, what 3 of them lost against float32, students, probes
    assert len(reused) == 1 + 4 + 3 + n_runs + n_probes
    assert len(after["reused_stages"]) == len(reused) and not before.get("reused_stages")
    assert (
        f"{len(reused)} finished stages reused from earlier runs" in (out / "report.md").read_text()
    )
    assert after["probes"] == before["probes"] and after["runs"] == before["runs"]
    assert after["claims"] == before["claims"]


def test_a_changed_option_remakes_only_what_depends_on_it(demo_run):
    """--online-steps changes the cached-vs-online pair's training configuration and nothing else:
    that pair is trained again, every other stage is reused. (After the re-run test above.)"""
    out, _, _ = demo_run
    lines: list[str] = []
    run_demo(out, quick_config(online_steps=3), say=lines.append)
    trained = [line for line in lines if ": training " in line]
    assert trained == [
        "  3 steps, teachers cached: training 3 steps ...",
        "  3 steps, teachers online: training 3 steps ...",
    ]
    assert sum("made from other inputs (train.optim" in line for line in lines) == 2
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]["pair-online"][0]["losses"]) == 3
    assert not any("probed " in line for line in lines)
