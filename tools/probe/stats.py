"""Paired comparisons of two encoders probed on the same items: is A better than B, and is A no
worse than B by more than a stated margin?

Accuracy differences are estimated per item and resampled by *cluster*: a clip for frame tasks
(its frames are nearly copies of each other), a recording's variants for utterance tasks. A
cluster bootstrap resamples whole clusters with replacement and recomputes
``acc(A) - acc(B)`` on the same resampled items for both encoders, so what the two share (easy
and hard items) cancels out. The percentile interval and the p-value come from the same
resamples: ``p < alpha`` exactly when the ``1 - alpha`` interval excludes 0.

"No measurable loss" is a non-inferiority decision (the lower half of a TOST): A is no worse
than B when the lower bound of the 95 % interval of ``acc(A) - acc(B)`` lies above ``-margin``.
It is never concluded from the absence of a significant difference.

Pure numpy; no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05
REPS = 4000
MARGIN = 0.02  # accuracy points: the default non-inferiority margin


@dataclass(frozen=True)
class Paired:
    """``acc(A) - acc(B)`` with its interval and two-sided p-value."""

    diff: float
    ci95: tuple[float, float]
    p_value: float
    n_items: int  # items (frames for frame tasks) both encoders were scored on
    n_clusters: int  # clusters the bootstrap resampled
    method: str

    def to_json(self) -> dict:
        return asdict(self) | {"ci95": list(self.ci95)}


@dataclass(frozen=True)
class Scores:
    """One encoder's per-item results on one task: ``correct`` (N,) in [0, total] per item
    (a 0/1 hit for an utterance, hits in a clip for frames, or a mean over seeds), ``total``
    (N,) what the item counts for, ``clusters`` (N,) the resampling unit of each item."""

    ids: tuple[str, ...]
    correct: np.ndarray
    total: np.ndarray
    clusters: tuple[str, ...]

    @classmethod
    def from_json(cls, d: dict) -> Scores:
        n = len(d["ids"])
        total = d.get("total") or [1.0] * n
        clusters = d.get("clusters") or d["ids"]
        if not (len(d["correct"]) == len(total) == len(clusters) == n):
            raise ValueError(
                f"per-item scores disagree in length: {n} ids, {len(d['correct'])} correct, "
                f"{len(total)} totals, {len(clusters)} clusters"
            )
        return cls(
            tuple(d["ids"]),
            np.asarray(d["correct"], np.float64),
            np.asarray(total, np.float64),
            tuple(clusters),
        )

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / max(self.total.sum(), 1e-12))


def mean_scores(runs: Sequence[Scores]) -> Scores:
    """Several runs of one encoder recipe (student seeds) on the same items: the per-item mean, so
    a paired test compares recipes rather than one lucky seed."""
    first = runs[0]
    for r in runs[1:]:
        if r.ids != first.ids:
            raise ValueError("runs to average were scored on different items")
    return Scores(first.ids, np.mean([r.correct for r in runs], 0), first.total, first.clusters)


def align(a: Scores, b: Scores) -> tuple[Scores, Scores]:
    """The items both were scored on, in one order (A's clusters). Where the two count an item
    differently (frame tasks seen at different frame rates), B's hits are rescaled to A's count:
    each clip then weighs the same for both, at each encoder's own per-clip accuracy."""
    where = {k: i for i, k in enumerate(b.ids)}
    ia = [i for i, k in enumerate(a.ids) if k in where and a.total[i] > 0 and b.total[where[k]] > 0]
    ib = [where[a.ids[i]] for i in ia]
    if not ia:
        raise ValueError("the two encoders share no scored items")
    ia_, ib_ = np.asarray(ia), np.asarray(ib)
    clusters = tuple(a.clusters[i] for i in ia)
    scale = a.total[ia_] / b.total[ib_]
    b_on_a = Scores(tuple(b.ids[j] for j in ib), b.correct[ib_] * scale, a.total[ia_], clusters)
    return _take(a, ia_, clusters), b_on_a


def _take(s: Scores, idx: np.ndarray, clusters: tuple[str, ...]) -> Scores:
    return Scores(tuple(s.ids[i] for i in idx), s.correct[idx], s.total[idx], clusters)


# ---------------------------------------------------------------------------------------------
# The bootstrap


def bootstrap_weights(n_clusters: int, reps: int, seed: int) -> np.ndarray:
    """(reps, n_clusters) how often each cluster is drawn in each resample (each row sums to
    n_clusters)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=reps).astype(
        np.float64
    )


def _cluster_sums(scores: Scores, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster (sum of correct, sum of total) over the clusters named in ``index``."""
    rows = np.fromiter((index[c] for c in scores.clusters), np.int64, len(scores.clusters))
    k = len(index)
    return np.bincount(rows, scores.correct, k), np.bincount(rows, scores.total, k)


def _interval_and_p(
    observed: float, resampled: np.ndarray, alpha: float
) -> tuple[tuple[float, float], float]:
    """Percentile interval and the matching two-sided p-value of a resampled difference."""
    d = resampled[np.isfinite(resampled)]
    lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    below, above = int((d <= 0).sum()), int((d >= 0).sum())
    p = min(1.0, 2 * (min(below, above) + 1) / (len(d) + 1))
    return (float(lo), float(hi)), p


def paired_bootstrap(
    a: Scores, b: Scores, *, reps: int = REPS, seed: int = 0, alpha: float = ALPHA
) -> Paired:
    """``acc(A) - acc(B)`` on the items both were scored on, clusters resampled together."""
    return paired_mean_bootstrap([(a, b)], reps=reps, seed=seed, alpha=alpha)


def paired_mean_bootstrap(
    pairs: Sequence[tuple[Scores, Scores]], *, reps: int = REPS, seed: int = 0, alpha: float = ALPHA
) -> Paired:
    """The mean over tasks of ``acc(A) - acc(B)``, each task's items paired. Clusters that several
    tasks share (one clip labelled for two tasks) are drawn together, so the tasks' dependence
    is kept."""
    aligned = [align(a, b) for a, b in pairs]
    names = sorted({c for a, _ in aligned for c in a.clusters})
    index = {c: i for i, c in enumerate(names)}
    w = bootstrap_weights(len(names), reps, seed)  # (reps, K)
    observed, resampled = [], []
    for a, b in aligned:
        ca, n = _cluster_sums(a, index)
        cb, _ = _cluster_sums(b, index)
        observed.append((ca.sum() - cb.sum()) / n.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled.append(
                (w @ (ca - cb)) / (w @ n)
            )  # (reps,): nan where no item of the task was drawn
    diff = float(np.mean(observed))
    ci, p = _interval_and_p(diff, np.mean(resampled, 0), alpha)
    n_items = int(sum(a.total.sum() for a, _ in aligned))
    return Paired(diff, ci, p, n_items, len(names), f"cluster bootstrap, {reps} resamples")


# ---------------------------------------------------------------------------------------------
# McNemar


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for two classifiers' 0/1 hits on the same independent
    items: a binomial test on the items where exactly one of them is right."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"hits differ in shape: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


# ---------------------------------------------------------------------------------------------
# Decisions


def beats(r: Paired, alpha: float = ALPHA) -> bool:
    """A is better than B: the difference is positive and significant (its interval above 0)."""
    return r.p_value < alpha and r.ci95[0] > 0


def no_worse(r: Paired, margin: float = MARGIN) -> bool:
    """A loses at most ``margin`` against B: the interval's lower bound lies above ``-margin``."""
    return r.ci95[0] > -margin


def verdict(r: Paired, margin: float = MARGIN, alpha: float = ALPHA) -> str:
    """One of: "A better", "B better", "equivalent" (within ±margin), "no worse" (A not below
    B by more than margin, but not shown within +margin either), "open" (undecided)."""
    if beats(r, alpha):
        return "A better"
    if r.p_value < alpha and r.ci95[1] < 0:
        return "B better"
    if no_worse(r, margin) and r.ci95[1] < margin:
        return "equivalent"
    if no_worse(r, margin):
        return "no worse"
    return "open"
