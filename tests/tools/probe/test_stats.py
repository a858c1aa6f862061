"""Paired comparisons on synthetic data with known answers: a real difference is found, no
difference is not, an equal pair is declared equivalent, a pair 0.1 apart is not; McNemar's exact
test against hand-computed binomial tails; seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest

from audistill.tools.probe import stats
from audistill.tools.probe.stats import Scores, mcnemar_exact, no_worse, paired_bootstrap, verdict


def items(hits: np.ndarray, prefix: str = "i", clusters: list[str] | None = None) -> Scores:
    ids = tuple(f"{prefix}{k}" for k in range(len(hits)))
    return Scores(ids, hits.astype(np.float64), np.ones(len(hits)), tuple(clusters or ids))


def pair(n: int, p_a: float, p_b: float, seed: int, shared: float = 0.6) -> tuple[Scores, Scores]:
    """Two classifiers on the same n items; with probability ``shared`` an item is equally easy
    or hard for both (what pairing cancels), otherwise each is right independently."""
    rng = np.random.default_rng(seed)
    common = rng.random(n) < shared
    level = rng.random(n) < (p_a + p_b) / 2
    a = np.where(common, level, rng.random(n) < p_a)
    b = np.where(common, level, rng.random(n) < p_b)
    return items(a), items(b)


def test_a_real_difference_is_found():
    a, b = pair(400, 0.80, 0.60, seed=0)
    r = paired_bootstrap(a, b, seed=0)
    assert r.diff == pytest.approx(a.accuracy - b.accuracy)
    assert 0.03 < r.diff < 0.15
    assert r.p_value < 0.05 and r.ci95[0] > 0
    assert verdict(r) == "A better" and stats.beats(r)
    assert verdict(paired_bootstrap(b, a, seed=0)) == "B better"


def test_no_difference_is_not_found():
    ps = []
    for seed in range(20):
        a, b = pair(200, 0.7, 0.7, seed=seed)
        r = paired_bootstrap(a, b, seed=seed, reps=1000)
        ps.append(r.p_value)
        assert r.ci95[0] <= r.diff <= r.ci95[1]
    assert np.mean(ps) > 0.3  # p-values under no difference are spread over [0, 1]
    assert sum(p < 0.05 for p in ps) <= 3


def test_an_equal_pair_is_equivalent_and_a_worse_pair_is_not():
    hits = np.random.default_rng(1).random(1000) < 0.7
    same = paired_bootstrap(items(hits), items(hits.copy()), seed=0)
    assert same.diff == 0 and same.ci95 == (0.0, 0.0) and same.p_value == 1.0
    assert no_worse(same, 0.02) and verdict(same, 0.02) == "equivalent"
    near, ref = pair(2000, 0.70, 0.70, seed=3, shared=0.95)
    r = paired_bootstrap(near, ref, seed=0)
    assert -0.02 < r.ci95[0] and r.ci95[1] < 0.02 and verdict(r, 0.02) == "equivalent"
    worse, ref = pair(1000, 0.60, 0.70, seed=2)
    r = paired_bootstrap(worse, ref, seed=0)
    assert not no_worse(r, 0.02) and verdict(r, 0.02) == "B better"


def test_too_few_items_leave_the_question_open():
    a, b = pair(30, 0.72, 0.70, seed=4, shared=0.0)
    r = paired_bootstrap(a, b, seed=0)
    assert r.ci95[0] < -0.02 and r.ci95[1] > 0 and verdict(r, 0.02) == "open"


def test_clusters_are_resampled_whole():
    # 20 clips of 50 frames; within a clip both encoders are all right or all wrong together,
    # except A wins a few clips outright: 20 clusters, not 1000 independent frames
    rng = np.random.default_rng(5)
    clip_a = rng.random(20) < 0.6
    clip_b = clip_a.copy()
    clip_b[:3] = False
    clip_a[:3] = True
    a = np.repeat(clip_a, 50)
    b = np.repeat(clip_b, 50)
    clusters = [f"c{i // 50}" for i in range(1000)]
    r_clip = paired_bootstrap(items(a, clusters=clusters), items(b, clusters=clusters), seed=0)
    r_frame = paired_bootstrap(items(a), items(b), seed=0)
    assert r_clip.n_clusters == 20 and r_frame.n_clusters == 1000 and r_clip.n_items == 1000
    assert r_clip.diff == pytest.approx(r_frame.diff)
    assert (r_clip.ci95[1] - r_clip.ci95[0]) > 3 * (r_frame.ci95[1] - r_frame.ci95[0])


def test_per_clip_sums_equal_per_frame_items():
    rng = np.random.default_rng(6)
    frames_a, frames_b = rng.random(600) < 0.8, rng.random(600) < 0.6
    clusters = [f"c{i // 30}" for i in range(600)]
    per_frame = paired_bootstrap(
        items(frames_a, clusters=clusters), items(frames_b, clusters=clusters), seed=0
    )
    ids = tuple(f"c{k}" for k in range(20))
    summed = [
        Scores(ids, f.reshape(20, 30).sum(1).astype(float), np.full(20, 30.0), ids)
        for f in (frames_a, frames_b)
    ]
    per_clip = paired_bootstrap(*summed, seed=0)
    assert per_clip.diff == pytest.approx(per_frame.diff)
    assert per_clip.ci95 == pytest.approx(per_frame.ci95) and per_clip.p_value == pytest.approx(
        per_frame.p_value
    )


def test_items_are_paired_by_id_whatever_their_order():
    a, b = pair(300, 0.8, 0.6, seed=7)
    order = np.random.default_rng(0).permutation(300)
    b_shuffled = Scores(
        tuple(b.ids[i] for i in order),
        b.correct[order],
        b.total[order],
        tuple(b.clusters[i] for i in order),
    )
    assert paired_bootstrap(a, b_shuffled, seed=0) == paired_bootstrap(a, b, seed=0)
    with pytest.raises(ValueError, match="share no scored items"):
        paired_bootstrap(a, items(b.correct, prefix="x"), seed=0)


def test_seeded_and_deterministic():
    a, b = pair(200, 0.75, 0.65, seed=8)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    rng = np.random.default_rng(0)  # fractional scores (seed means): resamples give distinct bounds
    a, b = items(rng.random(200)), items(rng.random(200))
    assert paired_bootstrap(a, b, seed=3).ci95 != paired_bootstrap(a, b, seed=4).ci95


def test_mean_over_tasks_pools_the_evidence():
    tasks = [pair(150, 0.75, 0.70, seed=s) for s in range(6)]
    each = [paired_bootstrap(a, b, seed=0) for a, b in tasks]
    pooled = stats.paired_mean_bootstrap(tasks, seed=0)
    assert pooled.diff == pytest.approx(np.mean([r.diff for r in each]))
    assert pooled.ci95[1] - pooled.ci95[0] < min(r.ci95[1] - r.ci95[0] for r in each)


def test_seed_average_of_scores():
    a1, b = pair(100, 0.8, 0.6, seed=9)
    a2 = items(1 - a1.correct)
    m = stats.mean_scores([a1, a2])
    assert m.correct.tolist() == [0.5] * 100 and m.accuracy == 0.5
    with pytest.raises(ValueError, match="different items"):
        stats.mean_scores([a1, items(a1.correct, prefix="x")])


def test_mcnemar_exact_against_binomial_tails():
    a = np.array([1] * 10 + [0] * 0 + [1] * 5, bool)  # 10 items only A gets right, 5 both right
    b = np.array([0] * 10 + [1] * 5, bool)
    assert mcnemar_exact(a, b) == pytest.approx(2 / 2**10)
    # 7 vs 3 discordant: 2 * P(X <= 3), X ~ Binomial(10, 1/2) = 2 * 176 / 1024
    a = np.array([1] * 7 + [0] * 3 + [1] * 20, bool)
    b = np.array([0] * 7 + [1] * 3 + [1] * 20, bool)
    assert mcnemar_exact(a, b) == pytest.approx(2 * 176 / 1024)
    assert mcnemar_exact(a, a) == 1.0
    assert mcnemar_exact(b, a) == mcnemar_exact(a, b)
    with pytest.raises(ValueError, match="shape"):
        mcnemar_exact(a, b[:-1])


def test_scores_from_json_checks_lengths():
    s = Scores.from_json({"ids": ["x", "y"], "correct": [1, 0]})
    assert s.total.tolist() == [1.0, 1.0] and s.clusters == ("x", "y") and s.accuracy == 0.5
    with pytest.raises(ValueError, match="disagree in length"):
        Scores.from_json({"ids": ["x", "y"], "correct": [1]})


def test_frame_rates_that_differ_weigh_each_clip_the_same():
    # A sees 50 frames per clip, B 100 (another frame rate): per-clip accuracies are compared
    ids = tuple(f"c{k}" for k in range(4))
    a = Scores(ids, np.array([50.0, 25.0, 0.0, 50.0]), np.full(4, 50.0), ids)
    b = Scores(ids, np.array([100.0, 50.0, 0.0, 0.0]), np.full(4, 100.0), ids)
    r = paired_bootstrap(a, b, seed=0)
    assert (
        r.diff == pytest.approx((1 + 0.5 + 0 + 1) / 4 - (1 + 0.5 + 0 + 0) / 4) and r.n_items == 200
    )
    empty = Scores(
        ids, np.zeros(4), np.array([50.0, 0.0, 50.0, 50.0]), ids
    )  # a clip with no labelled frames
    assert paired_bootstrap(empty, b, seed=0).n_clusters == 3
