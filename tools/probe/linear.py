"""Linear probes on frozen features: cross-validation folds, frame targets, the classifier,
confidence intervals.

Features come as ``(N, L, D)`` tensors (N items, L layers, D dims). The classifier standardizes
each layer on the training folds, mixes the layers with learned softmax weights (SUPERB) or
uses the one layer given, and is one linear map trained full-batch with AdamW. Weight decay and
the stopping step are picked on the validation fold. Zero initialization and full batches make
training deterministic: the seed only decides the folds (and bootstrap resamples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)


# ---------------------------------------------------------------------------------------------
# Splits


def grouped_folds(
    n: int, k: int, seed: int, labels: np.ndarray | None = None, groups: np.ndarray | None = None
) -> np.ndarray:
    """(n,) fold index in [0, k) of each item, or -1 for an item left out. Items of one group
    (variants of one recording, clips of one source) share a fold. With ``labels`` the folds are
    stratified: each class's groups are dealt round-robin over the folds (from a running offset,
    so fold sizes stay even); a class with fewer than 3 items is left out, and one with 3+ items
    but fewer than 3 groups is dealt by item."""
    if k < 2:
        raise ValueError(f"need 2+ folds, got {k}")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.full(n, -1, dtype=np.int64)
    offset, seen = 0, {}  # group -> fold: a group met under an earlier class keeps its fold
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 3:
            continue
        by_group = len(np.unique(groups[idx])) >= 3
        g = groups[idx] if by_group else np.arange(len(idx))
        keys = np.unique(g)
        for j, key in enumerate(keys[rng.permutation(len(keys))]):
            f = seen.setdefault(key, (offset + j) % k) if by_group else (offset + j) % k
            fold[idx[g == key]] = f
        offset += len(keys)
    return fold


def fold_parts(fold: np.ndarray, f: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of fold ``f``: the test fold, the next non-empty fold for
    validation (model selection), the rest for training."""
    used = set(np.unique(fold[fold >= 0]).tolist())
    v = next((g % k for g in range(f + 1, f + k) if g % k in used), f)
    test, val = (
        np.flatnonzero(fold == f),
        np.flatnonzero(fold == v) if v != f else np.zeros(0, np.int64),
    )
    train = np.flatnonzero((fold >= 0) & (fold != f) & (fold != v))
    return train, val, test


# ---------------------------------------------------------------------------------------------
# Frame targets


def frame_targets(
    intervals: list, n_frames: int, frame_rate: float, index: dict[str, int]
) -> np.ndarray:
    """(n_frames,) class index of each frame: the interval that holds the frame's centre
    ``(t + 0.5) / frame_rate``; -1 where no interval (or an unknown label) covers it."""
    y = np.full(n_frames, -1, dtype=np.int64)
    centres = (np.arange(n_frames) + 0.5) / frame_rate
    for start, end, label in intervals:
        if label in index:
            y[(centres >= start) & (centres < end)] = index[label]
    return y


# ---------------------------------------------------------------------------------------------
# Confidence intervals


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, min(p, centre - half)), min(
        1.0, max(p, centre + half)
    )  # holds p despite rounding


def cluster_bootstrap_interval(
    correct: np.ndarray, total: np.ndarray, seed: int, reps: int = 2000
) -> tuple[float, float]:
    """95 % percentile bootstrap of sum(correct)/sum(total), resampling clusters (clips): frames
    of one clip are not independent, so they are resampled together."""
    rng = np.random.default_rng(seed)
    k = len(correct)
    pick = rng.integers(0, k, size=(reps, k))  # (reps, k)
    acc = correct[pick].sum(1) / np.maximum(total[pick].sum(1), 1)
    lo, hi = np.percentile(acc, [2.5, 97.5])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# The classifier


@dataclass
class LinearProbe:
    mean: torch.Tensor  # (L, D)
    std: torch.Tensor  # (L, D)
    layer_logits: torch.Tensor  # (L,)
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) raw features -> (N, C)."""
        return _logits(
            (x.float() - self.mean) / self.std, self.layer_logits, self.weight, self.bias
        )

    def predict(self, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [self.logits(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)]
            )

    def layer_weights(self) -> list[float]:
        return torch.softmax(self.layer_logits, 0).tolist()


def _logits(
    z: torch.Tensor, layer_logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """(N, L, D) standardized -> (N, C)."""
    if z.shape[1] == 1:
        mixed = z[:, 0]  # (N, D)
    else:
        mixed = torch.einsum("l,nld->nd", torch.softmax(layer_logits, 0), z)  # (N, D)
    return torch.addmm(bias, mixed, weight.t())


def _train_one(
    z: torch.Tensor,
    y: torch.Tensor,
    zv: torch.Tensor,
    yv: torch.Tensor,
    n_classes: int,
    weight_decay: float,
    steps: int,
    lr: float,
    patience: int,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], float, float]:
    L, D = z.shape[1:]
    layer_logits = torch.zeros(L, requires_grad=L > 1)
    weight = torch.zeros(n_classes, D, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    params = [weight, bias] + ([layer_logits] if L > 1 else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    best = (-1.0, math.inf, None)  # (val acc, val loss, state)
    since = 0
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(_logits(z, layer_logits, weight, bias), y).backward()
        opt.step()
        if step % 5 == 4 or step == steps - 1:
            with torch.no_grad():
                out = _logits(zv, layer_logits, weight, bias)
                vloss = float(F.cross_entropy(out, yv))
                vacc = float((out.argmax(1) == yv).float().mean())
            if (vacc, -vloss) > (best[0], -best[1]):
                best = (vacc, vloss, [p.detach().clone() for p in (layer_logits, weight, bias)])
                since = 0
            else:
                since += 5
                if since >= patience:
                    break
    return best[2], best[0], best[1]


def fit_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    n_classes: int,
    *,
    weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
    steps: int = 300,
    lr: float = 1e-2,
    patience: int = 60,
) -> tuple[LinearProbe, dict]:
    """Train on (x, y) for each weight decay; keep the one best on (xv, yv) (accuracy, then loss).

    x, xv: (N, L, D) float; y, yv: (N,) int64 in [0, n_classes).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny full-batch steps: threads cost more than they give
    try:
        x = x.float()
        mean = x.mean(0)  # (L, D)
        std = x.std(0, unbiased=False).clamp_min(1e-5)
        z, zv = (x - mean) / std, (xv.float() - mean) / std
        best_state, best_key, best_wd = None, None, None
        for wd in weight_decays:
            state, vacc, vloss = _train_one(z, y, zv, yv, n_classes, wd, steps, lr, patience)
            if best_key is None or (vacc, -vloss) > best_key:
                best_state, best_key, best_wd = state, (vacc, -vloss), wd
    finally:
        torch.set_num_threads(threads)
    return LinearProbe(mean, std, *best_state), {
        "weight_decay": best_wd,
        "val_accuracy": best_key[0],
    }
