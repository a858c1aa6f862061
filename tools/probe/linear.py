"""Linear probes on frozen features: splits, frame targets, the classifier, confidence intervals.

Features come as ``(N, L, D)`` tensors (N items, L layers, D dims). The classifier standardizes
each layer on the training split, mixes the layers with learned softmax weights (SUPERB) or
uses the one layer given, and is one linear map trained full-batch with AdamW. Weight decay and
the stopping step are picked on the validation split. Zero initialization and full batches make
training deterministic: the seed only decides the splits (and bootstrap resamples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)
FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test


# ---------------------------------------------------------------------------------------------
# Splits


def stratified_split(labels: np.ndarray, seed: int, fractions: tuple[float, float, float] = FRACTIONS,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test), stratified by label. With ``groups``, items of one group (variants
    of one recording) land in one split. Each class with 3+ groups (items when no groups) gets at
    least one in every split; classes with fewer than 3 items are left out of all three, and a
    class with 3+ items but fewer than 3 groups is split by item."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 3:
            continue
        g = groups[idx] if len(np.unique(groups[idx])) >= 3 else np.arange(len(idx))
        members = {k: idx[g == k] for k in np.unique(g)}
        order = rng.permutation(len(members))
        keys = [list(members)[i] for i in order]
        want = (max(1, int(round(len(idx) * fractions[2]))), max(1, int(round(len(idx) * fractions[1]))))
        left = len(keys)
        for part, target in ((2, want[0]), (1, want[1])):
            taken = 0
            while keys and taken < target and left > (2 if part == 2 else 1):
                m = members[keys.pop(0)]
                parts[part].extend(m)
                taken += len(m)
                left -= 1
        for k in keys:
            parts[0].extend(members[k])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def random_split(n: int, seed: int, fractions: tuple[float, float, float] = FRACTIONS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of n items (n >= 3), each split non-empty."""
    if n < 3:
        raise ValueError(f"need at least 3 items to split, got {n}")
    idx = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * fractions[2])))
    n_val = min(max(1, int(round(n * fractions[1]))), n - n_test - 1)
    return np.sort(idx[n_test + n_val :]), np.sort(idx[n_test : n_test + n_val]), np.sort(idx[:n_test])


# ---------------------------------------------------------------------------------------------
# Frame targets


def frame_targets(intervals: list, n_frames: int, frame_rate: float, index: dict[str, int]) -> np.ndarray:
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
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # holds p despite rounding


def cluster_bootstrap_interval(correct: np.ndarray, total: np.ndarray, seed: int, reps: int = 2000
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
        return _logits((x.float() - self.mean) / self.std, self.layer_logits, self.weight, self.bias)

    def predict(self, x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.logits(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])

    def layer_weights(self) -> list[float]:
        return torch.softmax(self.layer_logits, 0).tolist()


def _logits(z: torch.Tensor, layer_logits: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(N, L, D) standardized -> (N, C)."""
    if z.shape[1] == 1:
        mixed = z[:, 0]  # (N, D)
    else:
        mixed = torch.einsum("l,nld->nd", torch.softmax(layer_logits, 0), z)  # (N, D)
    return torch.addmm(bias, mixed, weight.t())


def _train_one(z: torch.Tensor, y: torch.Tensor, zv: torch.Tensor, yv: torch.Tensor, n_classes: int,
               weight_decay: float, steps: int, lr: float, patience: int
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


def fit_probe(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, n_classes: int, *,
              weight_decays: tuple[float, ...] = WEIGHT_DECAYS, steps: int = 300, lr: float = 1e-2,
              patience: int = 60) -> tuple[LinearProbe, dict]:
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
    return LinearProbe(mean, std, *best_state), {"weight_decay": best_wd, "val_accuracy": best_key[0]}
