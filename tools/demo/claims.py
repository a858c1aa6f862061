"""The demo's claims, decided by paired tests on the probes' per-item hits
(``tools/probe/stats.py``).

Every comparison pairs two recipes on the items both were probed on; a recipe trained with
several student seeds is scored by its per-item mean over seeds. Decisions are made on the
numbers as the report prints them (3 decimals), so a printed verdict can always be checked
against its printed interval and the stated rule:

- "A beats B": p < 0.05 and the 95 % interval of acc(A) - acc(B) lies above 0;
- "no measurable loss" (A against a reference B): the interval's lower bound lies above
  -MARGIN (non-inferiority, the lower half of a TOST); it is never read off a non-significant
  difference;
- anything else is *open*: the evidence at this scale does not decide it - and so is any
  comparison on fewer than MIN_CLUSTERS independent clips, whose bootstrap interval is too rough.

The default codec is the one with the fewest bits among those that lose nothing measurable on
the probes *and* keep the targets themselves: at most MAX_VARIANCE_LOST of any teacher layer's
variance lost against the float32 bank (``shards.fidelity``). Linear probes of a small student
trained briefly cannot see what a large student trained for 100 000 steps loses from targets a
codec coarsened; the targets' own error can be measured exactly, at every scale.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from audistill.tools.probe import stats
from audistill.tools.probe.stats import Paired, Scores

MARGIN = 0.02
ONLINE_TOLERANCE = 1e-4  # |loss from the bank - loss with the teachers online| per step
MIN_CLUSTERS = 20  # fewer independent clips than this: the interval is reported as unreliable
# a default codec's targets keep at least 99 % of every teacher layer's variance (int8-delta
# loses at most 0.05 % on the demo's teachers, int4-group up to 8 %, mvq up to 36 %)
MAX_VARIANCE_LOST = 0.01
MAIN, OMEGA1, RANDOM = "omega10-float32", "omega1-float32", "random"


def seed_runs(results: dict, recipe: str) -> list[dict]:
    """The probe results of a recipe, one per student seed."""
    p = results["probes"].get(recipe)
    if p is None:
        return []
    return p if isinstance(p, list) else [p]


def recipe_scores(runs: list[dict], task: str) -> Scores | None:
    """Per-item hits of a recipe on a task, averaged over its seeds (None: not probed on it)."""
    got = [Scores.from_json(r["tasks"][task]["items"]) for r in runs if task in r.get("tasks", {})]
    if not got:
        return None
    return stats.mean_scores(got) if len(got) > 1 else got[0]


def spread(runs: list[dict], task: str) -> dict | None:
    """Accuracy of a recipe on a task across seeds: per seed, mean, sample std, min, max."""
    accs = [r["tasks"][task]["accuracy"] for r in runs if task in r.get("tasks", {})]
    if not accs:
        return None
    return {
        "per_seed": accs,
        "mean": float(np.mean(accs)),
        "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        "min": float(min(accs)),
        "max": float(max(accs)),
        "n_seeds": len(accs),
    }


def printed(r: Paired) -> Paired:
    """The comparison as the report prints it: difference and bounds to 3 decimals, p to 3."""
    return replace(
        r,
        diff=round(r.diff, 3),
        ci95=(round(r.ci95[0], 3), round(r.ci95[1], 3)),
        p_value=round(r.p_value, 3),
    )


def comparison(a: Scores | None, b: Scores | None, seed: int) -> dict | None:
    """acc(A) - acc(B) on one task, as printed, with its verdict (None if either is missing)."""
    if a is None or b is None:
        return None
    r = printed(stats.paired_bootstrap(a, b, seed=seed))
    few = r.n_clusters < MIN_CLUSTERS  # a bootstrap over a handful of clips decides nothing
    return r.to_json() | {
        "verdict": "open" if few else stats.verdict(r, MARGIN),
        "few_clips": few,
        "mcnemar_p": _mcnemar(*stats.align(a, b)),
    }


def _mcnemar(a: Scores, b: Scores) -> float | None:
    """McNemar's exact p beside the bootstrap, where it applies: one 0/1 hit per independent item
    (one seed, utterance task, no shared groups); None elsewhere."""
    hits = np.concatenate([a.correct, b.correct])
    if (
        (a.total != 1).any()
        or not np.isin(hits, (0.0, 1.0)).all()
        or len(set(a.clusters)) < len(a.clusters)
    ):
        return None
    return round(stats.mcnemar_exact(a.correct, b.correct), 3)


def compare_recipes(results: dict, a: str, b: str, tasks: list[str], seed: int = 0) -> dict:
    """Recipe A against recipe B: per task, and the mean over the tasks both were probed on."""
    ra, rb = seed_runs(results, a), seed_runs(results, b)
    per, pairs = {}, []
    for t in tasks:
        sa, sb = recipe_scores(ra, t), recipe_scores(rb, t)
        c = comparison(sa, sb, seed)
        if c is not None:
            per[t] = c
            pairs.append((sa, sb))
    mean = None
    if pairs:
        r = printed(stats.paired_mean_bootstrap(pairs, seed=seed))
        few = r.n_clusters < MIN_CLUSTERS
        mean = r.to_json() | {
            "verdict": "open" if few else stats.verdict(r, MARGIN),
            "few_clips": few,
            "tasks": [t for t in tasks if t in per],
        }
    return {"a": a, "b": b, "tasks": per, "mean": mean}


def non_inferiority(c: dict | None) -> str:
    """ "yes" (lower bound above -MARGIN), "no" (upper bound below -MARGIN: a loss larger than the
    margin is shown), "open" otherwise or when there is nothing to compare."""
    if c is None or c.get("few_clips"):
        return "open"
    if c["ci95"][0] > -MARGIN:
        return "yes"
    return "no" if c["ci95"][1] < -MARGIN else "open"


def decide(results: dict, tasks: list[str], codecs: list[str], seed: int = 0) -> dict:
    """Every claim the report makes, with its evidence and status ("decided" or "open")."""
    teachers = [k for k in results["probes"] if k.startswith("teacher:")]
    vs_random = compare_recipes(results, MAIN, RANDOM, tasks, seed)
    teacher_vs_random = {k: compare_recipes(results, k, RANDOM, tasks, seed) for k in teachers}
    taught = [t for t in tasks if any(wins(teacher_vs_random[k]["tasks"].get(t)) for k in teachers)]
    omega = compare_recipes(results, MAIN, OMEGA1, tasks, seed)
    codec_cmp = {
        c: compare_recipes(results, f"omega10-{c}", MAIN, tasks, seed)
        for c in codecs
        if c != "float32"
    }
    return {
        "margin": MARGIN,
        "min_clusters": MIN_CLUSTERS,
        "cached_vs_online": cached_vs_online(results),
        "distilled_vs_random": vs_random
        | {"claim": _beats_where_taught(vs_random, taught), "taught_tasks": taught},
        "teacher_vs_random": teacher_vs_random,
        "omega10_vs_omega1": omega | {"claim": _status(omega["mean"])},
        "codecs": {
            c: v | {"no_measurable_loss": non_inferiority(v["mean"])} for c, v in codec_cmp.items()
        },
    }


def wins(c: dict | None) -> bool:
    return c is not None and c["verdict"] == "A better"


def _beats_where_taught(cmp: dict, taught: list[str]) -> dict:
    """ "Distilled beats random on every task some teacher beats random on": decided true when it
    wins each of them, decided false when random wins one, open otherwise."""
    verdicts = {t: cmp["tasks"][t]["verdict"] if t in cmp["tasks"] else "open" for t in taught}
    if not taught:
        status = "open"
    elif all(v == "A better" for v in verdicts.values()):
        status = "decided: yes"
    elif any(v == "B better" for v in verdicts.values()):
        status = "decided: no"
    else:
        status = "open"
    return {"status": status, "verdicts": verdicts}


def _status(mean: dict | None) -> dict:
    if mean is None or mean["verdict"] == "open":
        return {"status": "open", "verdict": "open"}
    return {"status": "decided", "verdict": mean["verdict"]}


def default_codec(
    decisions: dict, bits: dict[str, float], lost: dict[str, float | None] | None = None
) -> tuple[str, str]:
    """The codec with the fewest bits per value (codec state included) that is shown to lose
    nothing measurable against float32 and whose targets lose at most MAX_VARIANCE_LOST of any
    layer's variance (``lost``: codec -> its worst layer's share, None where not measured), and
    why; float32 when none is."""
    lost = lost or {}
    probed = [c for c, v in decisions["codecs"].items() if v["no_measurable_loss"] == "yes"]
    coarse = [c for c in probed if (lost.get(c) or 0.0) > MAX_VARIANCE_LOST]
    fine = [c for c in probed if c not in coarse]
    unmeasured = [c for c in fine if lost.get(c) is None]
    left_out = (
        "; left out though the probes show no loss: "
        + ", ".join(f"{c} (loses up to {lost[c]:.1%} of a layer's variance)" for c in coarse)
        if coarse
        else ""
    )
    if fine:
        best = min(fine, key=lambda c: (bits[c], c))
        why = (
            "fewest bits per value among the codecs shown to lose nothing measurable on the "
            f"probes whose targets keep at least {1 - MAX_VARIANCE_LOST:.0%} of every layer's "
            "variance"
        )
        if best in unmeasured:
            why += f" (the variance {best} loses was not measured in this run)"
        return best, why + left_out
    return (
        "float32",
        "no lower-precision codec was shown to lose nothing measurable at this scale (open)"
        if not coarse
        else "no lower-precision codec both loses nothing measurable on the probes and keeps "
        f"{1 - MAX_VARIANCE_LOST:.0%} of every layer's variance" + left_out,
    )


def cached_vs_online(results: dict) -> dict | None:
    """Does a student trained from the bank train as one with the teachers online?

    Decided on the *same weights*: the online run (``run.online_check_bank``) scores its student's
    outputs at every step against the online targets and against the bank's, so each difference
    is the bank's alone (``diffs``); ``within`` when every one is within ONLINE_TOLERANCE. The
    two runs' own per-step losses (``drift``: bank run − online run) start equal and then drift
    apart as any two float32 trajectories do whose inputs differ in the last bits (Adam's first
    steps amplify it, and how much depends on the CPU's kernels): shown, not decided on. A run
    without the same-weights losses (an older results.json) is decided on its drift, as before."""
    runs = results.get("runs", {})
    if not runs.get("pair-cached") or not runs.get("pair-online"):
        return None
    lc, lo = runs["pair-cached"][0]["losses"], runs["pair-online"][0]["losses"]
    drift = [a - b for a, b in zip(lc, lo, strict=False)]
    rows = [r for r in runs["pair-online"][0].get("log", []) if "loss_bank" in r]
    same = [r["loss_bank"] - r["loss"] for r in rows] if rows else None
    diffs = same if same else drift
    if not diffs:
        return None
    worst = max(abs(d) for d in diffs)
    return {
        "steps": len(diffs),
        "same_weights": bool(same),
        "diffs": diffs,
        "drift": drift,
        "first_step": diffs[0],
        "max_abs": worst,
        "max_drift": max((abs(d) for d in drift), default=0.0),
        "tolerance": ONLINE_TOLERANCE,
        "within": worst <= ONLINE_TOLERANCE,
    }
