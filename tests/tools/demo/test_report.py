"""The report rendered from a synthetic results.json: every claim marked decided or open, codec
verdicts that agree with their printed intervals and rule, bits per value with codec state, and a
loss plot built from the unweighted per-teacher losses."""

from __future__ import annotations

import re

import numpy as np
import pytest

from audistill.tools.demo import report
from audistill.tools.demo.report import smooth, teacher_losses

from .test_claims import flip, probe

TASKS = ("word", "pitch", "domain")
CODECS = ("float32", "int8-delta", "int4-group", "mvq")


def sizes(bits_codes: float, state: int) -> dict:
    values = 10_000_000
    code = int(bits_codes * values / 8)
    return {
        "audio_bytes": 30 * 2**20,
        "feature_bytes": code + 4096,
        "codec_state_bytes": state,
        "shard_other_bytes": 8192,
        "values": values,
        "code_bytes": code,
        "bits_per_value_codes": bits_codes,
        "bits_per_value": 8 * (code + state) / values,
        "layers": {},
    }


def lost(*shares: float) -> dict:
    """A codec bank's per-layer error against float32 (``shards.fidelity``), one layer a share."""
    return {
        f"t/L{i}": {
            "frames": 1000,
            "variance_lost": v,
            "rel_l2": v**0.5,
            "chan_err": v**0.5,
            "cosine": 1 - v,
        }
        for i, v in enumerate(shares)
    }


def run(omega_scale: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    log, val = [], []
    for step in range(1, 31):
        a, b = 1.0 / step + rng.random() * 0.05, 2.0 / step + rng.random() * 0.05
        # the weighted total depends on omega; the per-target losses do not
        log.append(
            {
                "kind": "train",
                "step": step,
                "loss": omega_scale * a + b,
                "loss/fcpe__L02": a,
                "loss/fcpe__L06": a + 0.1,
                "loss/whisper__L04": b,
            }
        )
        if step % 10 == 0:
            val.append(
                {
                    "kind": "val",
                    "step": step,
                    "loss": omega_scale * a,
                    "loss/fcpe__L02": a,
                    "loss/whisper__L04": b,
                }
            )
    return {
        "losses": [r["loss"] for r in log],
        "log": log,
        "val": val,
        "steps_per_s": 2.0,
        "audio_s_per_s": 30.0,
        "loader_wait_frac": 0.1,
        "wall_s": 15.0,
    }


@pytest.fixture(scope="module")
def results() -> dict:
    rng = np.random.default_rng(0)
    base = {t: rng.random(300) < 0.55 for t in TASKS}
    better = {t: flip(h, 0.3, rng, True) for t, h in base.items()}
    return {
        "config": {
            "student": "mini",
            "steps": 30,
            "batch_seconds": 16.0,
            "seed": 0,
            "seeds": 2,
            "probe_folds": 5,
        },
        "corpus": {"clips": 300, "seconds": 900.0, "tasks": list(TASKS)},
        "notes": [],
        "total_s": 600.0,
        "stages_s": {"corpus": 10.0, "train": 100.0},
        "extract": {"segments_written": 300, "seconds": 900.0, "wall_s": 60.0, "teachers": {}},
        "banks": {
            "float32": {"sizes": sizes(29.9, 0)},
            "int8-delta": {"sizes": sizes(6.5, 20_000), "fidelity": lost(0.0001, 0.0003, 0.0005)},
            "int4-group": {"sizes": sizes(3.6, 0), "fidelity": lost(0.01, 0.03, 0.08)},
            "mvq": {"sizes": sizes(0.18, 4_400_000), "fidelity": lost(0.04, 0.2, 0.36)},
        },
        "float32_val": {c: [1.0 + 0.01 * i, 1.01 + 0.01 * i] for i, c in enumerate(CODECS)},
        "runs": {
            "omega10-float32": [run(10, 0), run(10, 1)],
            "omega1-float32": [run(1, 2)],
            "pair-cached": [run(10, 3)],
            "pair-online": [run(10, 3)],
        },
        "probes": {
            "omega10-float32": [
                probe(better),
                probe({t: flip(h, 0.02, rng, False) for t, h in better.items()}),
            ],
            "omega1-float32": [probe({t: flip(h, 0.01, rng, False) for t, h in better.items()})],
            "random": [probe(base)],
            "teacher:fcpe": [probe({"pitch": flip(base["pitch"], 0.5, rng, True)})],
            "omega10-int8-delta": [probe(better)],
            "omega10-int4-group": [
                probe({t: flip(h, 0.04, rng, False) for t, h in better.items()})
            ],
            "omega10-mvq": [probe({t: flip(h, 0.25, rng, False) for t, h in better.items()})],
        },
    }


def test_report_marks_every_claim_and_keeps_its_own_rules(results, tmp_path):
    text = report.write_report(tmp_path, results).read_text()
    assert "## Claims and their status" in text
    assert (
        "Distilled beats random-init on every task some teacher beats it on (pitch): **decided: "
        "yes**" in text
    )
    for fig in ("loss_curves", "probes", "bank_bytes", "throughput"):
        assert (tmp_path / "figures" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| ") and "bits" not in line and line.split(" | ")[0][2:] in CODECS
    ]
    assert len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        codec, verdict = cells[0], cells[-1]
        if codec == "float32":
            assert verdict == "reference"
            continue
        lo, hi = (
            float(x) for x in re.search(r"\[([-+]\d\.\d+), ([-+]\d\.\d+)\]", cells[8]).groups()
        )
        assert (verdict == "yes") == (lo > -0.02), (
            row
        )  # the verdict follows the stated rule on printed numbers
        assert (verdict == "no (loss shown)") == (hi < -0.02), row
    mvq = next(r for r in rows if r.startswith("| mvq"))
    assert (
        "| 0.18 | 3.70 |" in mvq
    )  # codebooks counted: 0.18 b/v of codes, 3.70 with the codec state
    # the median and the worst layer's share of variance lost, beside the bits
    assert "| 0.03% / 0.05% |" in next(r for r in rows if r.startswith("| int8-delta"))
    assert "| 20.00% / 36.00% |" in mvq and "| 0 (reference) |" in rows[0]
    # int4-group and mvq lose more than 1 % of a layer's variance: int8-delta, whatever the probes
    assert re.search(r"Default codec: \*\*(\S+)\*\*", text).group(1) == "int8-delta"
    assert "`mvq` loses nothing measurable against float32: **decided: loses more than the " in text
    assert "(its targets lose up to 36.00% of a layer's variance)" in text
    omega_rows = text.split("## 2.")[1].split("## 3.")[0]
    assert omega_rows.count("seeds: ") == len(
        TASKS
    )  # the two omega = 10 seeds' spread, in its own column
    assert all(
        line.split(" | ")[1].count("seeds: ") == 1
        for line in omega_rows.splitlines()
        if line.startswith("| ") and line.split(" | ")[0][2:] in TASKS
    )


def test_default_codec_is_the_fewest_bits_shown_to_lose_nothing(results):
    decisions = report.claims.decide(results, list(TASKS), list(CODECS))
    _, best, _ = report.codec_table(results, decisions)
    fine = [
        c
        for c, v in decisions["codecs"].items()
        if v["no_measurable_loss"] == "yes" and report.variance_lost(results, c)[1] <= 0.01
    ]
    assert fine and best == min(fine, key=lambda c: report.bits_of(results, c))
    assert decisions["codecs"]["mvq"]["no_measurable_loss"] == "no"


def test_a_codec_lossless_on_the_probes_but_coarse_on_its_targets_is_not_the_default(results):
    decisions = report.claims.decide(results, list(TASKS), list(CODECS))
    for c in decisions["codecs"].values():  # every codec passes the probes
        c["no_measurable_loss"] = "yes"
    _, best, why = report.codec_table(results, decisions)
    assert best == "int8-delta"
    assert "mvq (loses up to 36.0% of a layer's variance)" in why
    assert "int4-group (loses up to 8.0% of a layer's variance)" in why
    # a run that did not measure the targets (a results.json from before): the probes decide
    older = {**results, "banks": {c: {"sizes": b["sizes"]} for c, b in results["banks"].items()}}
    _, best, why = report.codec_table(older, decisions)
    assert best == "int4-group" and "was not measured" in why  # 3.6 b/v, mvq 3.7 with codebooks
    table = report.codec_table(older, decisions)[0]
    assert all(" | — | " in r for r in table[2:] if not r.startswith("| float32"))


@pytest.mark.parametrize(
    ("profile", "seeds", "chosen", "expected"),
    [
        ("full", 3, "int8-delta", "its choice is the library's default codec (`int8-delta`)"),
        ("full", 3, "mvq", "its choice (`mvq`) is not the library's default codec (`int8-delta`)"),
        ("default", 1, "mvq", "this run (default profile, 1 seed) is advisory"),
        ("full", 1, "int8-delta", "this run (full profile, 1 seed) is advisory"),
    ],
)
def test_library_default_note_never_claims_a_default_it_does_not_have(
    monkeypatch, profile, seeds, chosen, expected
):
    monkeypatch.setattr("audistill.extract.spec.DEFAULT_CODEC", "int8-delta")
    note = report._library_default_note({"profile": profile, "seeds": seeds}, chosen)
    assert expected in note
    assert "follows the choice" not in note


def test_teacher_losses_are_unweighted_and_comparable_across_omegas():
    a, b = run(10, 0), run(1, 0)  # same per-target losses, different weightings
    assert [r["loss"] for r in a["log"]] != [r["loss"] for r in b["log"]]
    la, lb = teacher_losses(a["log"]), teacher_losses(b["log"])
    assert la == lb and set(la) == {"fcpe", "whisper"}
    steps, vals = la["fcpe"]
    assert steps[:2] == [1, 2] and vals[0] == pytest.approx(
        a["log"][0]["loss/fcpe__L02"] + 0.05
    )  # mean of its 2 targets
    assert teacher_losses(a["val"])["whisper"][0] == [10, 20, 30]


def test_smooth_is_a_trailing_mean():
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert smooth([2.0], 5) == [2.0]


def test_cached_against_online_reports_same_weights_and_drift_apart(results, tmp_path):
    online = dict(results["runs"]["pair-online"][0])
    online["log"] = [dict(r, loss_bank=r["loss"] + 1e-7) for r in online["log"]]
    online["losses"] = [x + 2e-4 * k for k, x in enumerate(online["losses"])]  # drifting apart
    res = {**results, "runs": {**results["runs"], "pair-online": [online]}, "claims": None}
    text = report.write_report(tmp_path, res).read_text()
    assert (
        "the same weights' loss against the bank's targets and the online teachers' within " in text
    )
    assert "1e-04 at every step of 30): **yes** (largest 1.0e-07" in text
    section = text.split("## 4.")[1].split("## 5.")[0]
    assert "That difference is the bank's alone" in section and "drift is shown" in section
