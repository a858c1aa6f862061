"""The report's claims from per-item probe hits: decided where the paired evidence decides,
open where it does not, verdicts that agree with their printed intervals, seeds averaged."""

from __future__ import annotations

import numpy as np
import pytest

from audistill.tools.demo import claims

N = 400  # items per task


def probe(hits: dict[str, np.ndarray]) -> dict:
    """A probe result as ``probe_manifest`` returns it (only what claims read)."""
    return {
        "tasks": {
            t: {
                "accuracy": float(h.mean()),
                "chance": 0.5,
                "items": {
                    "ids": [f"clip{i}" for i in range(len(h))],
                    "correct": h.astype(float).tolist(),
                    "total": [1.0] * len(h),
                    "clusters": [f"clip{i}" for i in range(len(h))],
                },
            }
            for t, h in hits.items()
        }
    }


def flip(h: np.ndarray, frac: float, rng: np.random.Generator, to: bool) -> np.ndarray:
    """``h`` with a fraction of the items set to ``to`` (right or wrong)."""
    out = h.copy()
    out[rng.random(len(h)) < frac] = to
    return out


@pytest.fixture(scope="module")
def results() -> dict:
    rng = np.random.default_rng(0)
    base = {t: rng.random(N) < 0.55 for t in ("word", "pitch", "domain")}
    better = {
        t: flip(h, 0.3, rng, True) for t, h in base.items()
    }  # distilled: ~+0.13 on every task
    return {
        "probes": {
            "omega10-float32": [
                probe(better),
                probe({t: flip(h, 0.02, rng, False) for t, h in better.items()}),
            ],
            "omega1-float32": [probe(better)],
            "random": [probe(base)],
            "teacher:fcpe": [
                probe({"pitch": flip(base["pitch"], 0.5, rng, True)})
            ],  # beats random on pitch only
            "teacher:whisper": [probe({"word": base["word"]})],  # no better than random on word
            "omega10-int8-delta": [probe(better)],
            "omega10-mvq": [
                probe({t: flip(h, 0.25, rng, False) for t, h in better.items()})
            ],  # ~-0.15
            "omega10-int4-group": [
                probe(
                    {
                        t: np.where(rng.random(N) < 0.5, h, rng.random(N) < 0.6)
                        for t, h in better.items()
                    }
                )
            ],
        }
    }


def test_distilled_beats_random_where_a_teacher_does(results):
    d = claims.decide(
        results, ["word", "pitch", "domain"], ["float32", "int8-delta", "int4-group", "mvq"]
    )
    vs = d["distilled_vs_random"]
    assert all(
        c["verdict"] == "A better" and c["p_value"] < 0.05 and c["ci95"][0] > 0
        for c in vs["tasks"].values()
    )
    assert vs["taught_tasks"] == ["pitch"] and vs["claim"]["status"] == "decided: yes"
    assert set(d["teacher_vs_random"]["teacher:whisper"]["tasks"]) == {
        "word"
    }  # paired on what it was probed on
    assert d["teacher_vs_random"]["teacher:whisper"]["tasks"]["word"]["verdict"] != "A better"
    assert (
        d["teacher_vs_random"]["teacher:fcpe"]["tasks"]["pitch"]["mcnemar_p"] < 0.001
    )  # one seed, 0/1 hits
    assert all(
        c["mcnemar_p"] is None for c in vs["tasks"].values()
    )  # two seeds averaged: not 0/1 hits


def test_seeds_are_averaged_and_their_spread_reported(results):
    runs = claims.seed_runs(results, "omega10-float32")
    s = claims.recipe_scores(runs, "word")
    assert s.correct.max() <= 1 and set(np.unique(s.correct)) <= {0.0, 0.5, 1.0}
    sp = claims.spread(runs, "word")
    assert sp["n_seeds"] == 2 and sp["min"] <= sp["mean"] <= sp["max"] and sp["std"] > 0
    assert claims.spread(claims.seed_runs(results, "random"), "word")["std"] == 0.0
    assert claims.spread(runs, "nope") is None and claims.seed_runs(results, "nope") == []


def test_codecs_decided_by_non_inferiority_and_the_default_follows(results):
    d = claims.decide(
        results, ["word", "pitch", "domain"], ["float32", "int8-delta", "int4-group", "mvq"]
    )
    codecs = d["codecs"]
    assert set(codecs) == {"int8-delta", "int4-group", "mvq"}
    assert codecs["int8-delta"]["no_measurable_loss"] == "yes"  # same hits as float32's first seed
    assert codecs["mvq"]["no_measurable_loss"] == "no" and codecs["mvq"]["mean"]["ci95"][1] < -0.02
    for c in codecs.values():  # the printed verdict never contradicts the printed interval
        lo, hi = c["mean"]["ci95"]
        assert (c["no_measurable_loss"] == "yes") == (lo > -0.02)
        assert (c["no_measurable_loss"] == "no") == (hi < -0.02)
        assert c["mean"]["ci95"] == [round(lo, 3), round(hi, 3)]
    bits = {"int8-delta": 6.5, "int4-group": 3.6, "mvq": 0.4}
    assert claims.default_codec(d, bits)[0] == (
        "int4-group" if codecs["int4-group"]["no_measurable_loss"] == "yes" else "int8-delta"
    )
    # the targets' own error: a codec that loses more than 1 % of a layer's variance is left out
    passed = {"codecs": {c: {"no_measurable_loss": "yes"} for c in bits}}
    lost = {"int8-delta": 0.0005, "int4-group": 0.08, "mvq": 0.36}
    codec, why = claims.default_codec(passed, bits, lost)
    assert codec == "int8-delta" and "int4-group (loses up to 8.0%" in why and "mvq" in why
    assert claims.default_codec(passed, bits, {**lost, "int4-group": 0.01})[0] == "int4-group"
    codec, why = claims.default_codec(passed, bits, {c: 0.5 for c in bits})
    assert codec == "float32" and "keeps 99% of every layer's variance" in why
    none = {"codecs": {"mvq": {"no_measurable_loss": "open"}}}
    codec, why = claims.default_codec(none, {"mvq": 0.4})
    assert codec == "float32" and "open" in why


def test_a_boundary_loss_is_not_called_within_the_margin():
    assert claims.non_inferiority({"ci95": [-0.020, 0.01]}) == "open"  # -0.020 is not above -0.02
    assert claims.non_inferiority({"ci95": [-0.019, 0.01]}) == "yes"
    assert claims.non_inferiority({"ci95": [-0.08, -0.021]}) == "no"
    assert claims.non_inferiority(None) == "open"
    assert claims.non_inferiority({"ci95": [0.0, 0.0], "few_clips": True}) == "open"


def test_omega_comparison_is_open_when_the_evidence_is_thin():
    rng = np.random.default_rng(1)
    a = {"t": rng.random(15) < 0.6}
    b = {"t": rng.random(15) < 0.6}
    res = {
        "probes": {
            "omega10-float32": [probe(a)],
            "omega1-float32": [probe(b)],
            "random": [probe(b)],
        }
    }
    d = claims.decide(res, ["t"], ["float32"])
    om = d["omega10_vs_omega1"]
    assert om["claim"]["status"] == "open" and om["tasks"]["t"]["few_clips"]
    same = {
        "probes": {
            "omega10-float32": [probe(a)],
            "omega1-float32": [probe(a)],
            "random": [probe(b)],
        }
    }
    om = claims.decide(same, ["t"], ["float32"])["omega10_vs_omega1"]
    assert (
        om["tasks"]["t"]["ci95"] == [0.0, 0.0] and om["tasks"]["t"]["verdict"] == "open"
    )  # 15 clips decide nothing
    assert om["mean"]["verdict"] == "open" and om["claim"]["status"] == "open"
    assert (
        d["distilled_vs_random"]["claim"]["status"] == "open"
    )  # no teacher: nothing taught to compare on


def pair(cached: list[float], online: list[float]) -> dict:
    return {"runs": {"pair-cached": [{"losses": cached}], "pair-online": [{"losses": online}]}}


def test_cached_against_online_per_step_within_the_tolerance():
    ok = claims.cached_vs_online(pair([1.5, 1.4, 1.3], [1.5 - 1e-7, 1.4 + 5e-5, 1.3 - 9e-5]))
    assert ok["within"] and ok["steps"] == 3 and ok["first_step"] == pytest.approx(1e-7)
    assert ok["max_abs"] == pytest.approx(9e-5)
    drift = claims.cached_vs_online(pair([1.5, 1.4, 1.3], [1.5, 1.4, 1.3 + 2e-4]))
    assert not drift["within"] and drift["max_abs"] == pytest.approx(2e-4)
    assert claims.cached_vs_online({"runs": {}}) is None


def test_cached_against_online_is_decided_on_the_same_weights_when_logged():
    """The online run's same-weights losses decide; the two runs' drift is shown, not decided on
    (here it exceeds the tolerance by step 3, as two float32 runs did on one CPU)."""
    res = pair([1.5, 1.4, 1.3], [1.5, 1.4 + 2e-6, 1.3 + 1.6e-4])
    res["runs"]["pair-online"][0]["log"] = [
        {"step": 1, "loss": 1.5, "loss_bank": 1.5},
        {"step": 2, "loss": 1.4 + 2e-6, "loss_bank": 1.4 + 2e-6 + 3e-8},
        {"step": 3, "loss": 1.3 + 1.6e-4, "loss_bank": 1.3 + 1.6e-4 - 5e-8},
    ]
    co = claims.cached_vs_online(res)
    assert co["same_weights"] and co["within"] and co["max_abs"] == pytest.approx(5e-8, abs=1e-9)
    assert co["max_drift"] == pytest.approx(1.6e-4)
    res["runs"]["pair-online"][0]["log"][2]["loss_bank"] += 3e-4  # the bank's targets differ
    co = claims.cached_vs_online(res)
    assert not co["within"] and co["max_abs"] == pytest.approx(3e-4, rel=1e-3)
