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

from audistill.shards.devices import torch_threads

WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)
SMALL = 2_000_000  # feature values x weight decays below which a probe trains on one thread


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


def _mix_many(z: torch.Tensor, layer_logits: torch.Tensor) -> torch.Tensor:
    """(N, L, D) standardized, (W, L) layer logits -> (W, N, D): each probe's layer mix."""
    if z.shape[1] == 1:
        return z[:, 0].expand(layer_logits.shape[0], -1, -1)
    return torch.einsum("wl,nld->wnd", torch.softmax(layer_logits, 1), z)


def _train_all(
    z: torch.Tensor,
    y: torch.Tensor,
    zv: torch.Tensor,
    yv: torch.Tensor,
    n_classes: int,
    weight_decays: tuple[float, ...],
    steps: int,
    lr: float,
    patience: int,
) -> list[tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], float, float]]:
    """One probe per weight decay, trained side by side as one batch of W independent linear
    maps: each probe's loss, gradient, Adam moments and decoupled weight decay are its own, so
    every probe follows the path it would follow alone (AdamW: decay, then the Adam step), in a
    quarter of the calls. Each keeps its best validation state and stops on its own patience.
    Returns per weight decay (state, val accuracy, val loss)."""
    W, (L, D) = len(weight_decays), z.shape[1:]
    layer_logits = torch.zeros(W, L, requires_grad=L > 1)
    weight = torch.zeros(W, n_classes, D, requires_grad=True)
    bias = torch.zeros(W, n_classes, requires_grad=True)
    params = [weight, bias] + ([layer_logits] if L > 1 else [])
    opt = torch.optim.Adam(params, lr=lr)  # the decay is applied below, per probe
    keep = torch.tensor([1.0 - lr * wd for wd in weight_decays])
    shrink = [keep.view(-1, *[1] * (p.ndim - 1)) for p in params]  # per probe, per parameter
    n = len(y)
    y_all = y.repeat(W)
    best: list[tuple[float, float, list | None]] = [(-1.0, math.inf, None)] * W
    since, live = [0] * W, [True] * W
    for step in range(steps):
        opt.zero_grad()
        logits = torch.baddbmm(bias[:, None, :], _mix_many(z, layer_logits), weight.transpose(1, 2))
        # the sum of each probe's mean loss: probe w's gradient is its own loss's gradient
        (F.cross_entropy(logits.reshape(W * n, n_classes), y_all, reduction="sum") / n).backward()
        with torch.no_grad():
            for p, k in zip(params, shrink, strict=True):
                p.mul_(k)
        opt.step()
        if step % 5 == 4 or step == steps - 1:
            with torch.no_grad():
                out = torch.baddbmm(
                    bias[:, None, :], _mix_many(zv, layer_logits), weight.transpose(1, 2)
                )  # (W, Nv, C)
                vloss = F.cross_entropy(out.transpose(1, 2), yv.expand(W, -1), reduction="none")
                vloss = vloss.mean(1).tolist()
                vacc = (out.argmax(2) == yv).float().mean(1).tolist()
            for w in range(W):
                if not live[w]:
                    continue
                if (vacc[w], -vloss[w]) > (best[w][0], -best[w][1]):
                    state = [p.detach()[w].clone() for p in (layer_logits, weight, bias)]
                    best[w] = (vacc[w], vloss[w], state)
                    since[w] = 0
                else:
                    since[w] += 5
                    live[w] = since[w] < patience
            if not any(live):
                break
    return [(tuple(b[2]), b[0], b[1]) for b in best]


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
    tiny = x.numel() * len(weight_decays) < SMALL  # tiny full-batch steps: threads cost more
    with torch_threads(1 if tiny else torch.get_num_threads()):
        x = x.float()
        mean = x.mean(0)  # (L, D)
        std = x.std(0, unbiased=False).clamp_min(1e-5)
        z, zv = (x - mean) / std, (xv.float() - mean) / std
        best_state, best_key, best_wd = None, None, None
        fitted = _train_all(z, y, zv, yv, n_classes, tuple(weight_decays), steps, lr, patience)
        for wd, (state, vacc, vloss) in zip(weight_decays, fitted, strict=True):
            if best_key is None or (vacc, -vloss) > best_key:  # the first of equals
                best_state, best_key, best_wd = state, (vacc, -vloss), wd
    return LinearProbe(mean, std, *best_state), {
        "weight_decay": best_wd,
        "val_accuracy": best_key[0],
    }
