"""How far one bank's features are from another's on the same segments: what a lossy re-encoding
(``shards recode``) lost, per teacher layer, measured on the stored features themselves.

A student is trained to predict the stored targets, so a codec's cost is what it removes from
them. Per teacher layer, over the frames compared:

- ``variance_lost``: squared error over the reference's total variance (0 is exact; 0.3 means
  the codec keeps a target as if 30 % of its variance were replaced by noise or dropped);
- ``rel_l2``: the error's L2 norm over the reference's;
- ``chan_err``: the RMS over channels of each channel's error RMS over its standard deviation (a
  codec that crushes the small channels shows here and not in the totals);
- ``cosine``: the mean cosine similarity of matching frames.

Frames are read from whole shards taken in an order spread over the bank (0, n/2, n/4, 3n/4,
...) until every layer has ``max_frames``, so the numbers are deterministic and do not need a
read of the whole bank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .bank import Bank
from .errors import MissingDataError, ShardError
from .reader import BankReader, spread_order


class ErrorStats:
    """Streams ``(reference, other)`` frame pairs of one layer into the error statistics above:
    per-channel mean and variance of the reference (Chan's parallel update, float64), per-channel
    squared error, and the sum of frame cosines."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None  # sum of squared deviations from the mean, per channel
        self.err2: np.ndarray | None = None  # sum of squared errors, per channel
        self.cos_sum, self.cos_n = 0.0, 0

    def add(self, x: np.ndarray, xh: np.ndarray) -> None:
        """``x`` the reference frames, ``xh`` the same frames from the other side, both (N, D)."""
        x = np.asarray(x, dtype=np.float64)
        xh = np.asarray(xh, dtype=np.float64)
        if x.shape != xh.shape or x.ndim != 2:
            raise ValueError(
                f"frames must be two (N, D) arrays of one shape, got {x.shape} and {xh.shape}"
            )
        if not len(x):
            return
        n, mean = len(x), x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            self.err2 = np.zeros_like(mean)
        else:
            total = self.n + n
            delta = mean - self.mean
            self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
            self.mean = self.mean + delta * n / total
            self.n = total
        self.err2 += ((xh - x) ** 2).sum(0)
        nx, nh = np.linalg.norm(x, axis=1), np.linalg.norm(xh, axis=1)
        good = (nx > 0) & (nh > 0)
        self.cos_sum += float(((x * xh).sum(1)[good] / (nx[good] * nh[good])).sum())
        self.cos_n += int(good.sum())

    def summary(self) -> dict:
        return summarize([self])


def summarize(stats: Iterable[ErrorStats]) -> dict:
    """The statistics of several layers taken together (totals over every value, channels of
    every layer in one RMS, frames of every layer in one mean); one layer's alone from one."""
    stats = [s for s in stats if s.n]
    if not stats:
        return {"frames": 0, "variance_lost": 0.0, "rel_l2": 0.0, "chan_err": 0.0, "cosine": 1.0}
    err2 = sum(float(s.err2.sum()) for s in stats)
    sq = sum(float(s.m2.sum() + s.n * np.square(s.mean).sum()) for s in stats)  # sum of x**2
    var = sum(float(s.m2.sum()) for s in stats)
    chans = []
    for s in stats:
        v = s.m2 / s.n
        ok = v > 1e-12 * max(float(v.max()), 1e-30)
        chans.append((s.err2 / s.n)[ok] / v[ok])
    chan = np.concatenate(chans)
    cos_n = sum(s.cos_n for s in stats)
    return {
        "frames": sum(s.n for s in stats),
        "variance_lost": err2 / var if var > 0 else (0.0 if err2 == 0 else math.inf),
        "rel_l2": math.sqrt(err2 / sq) if sq > 0 else 0.0,
        "chan_err": float(np.sqrt(chan.mean())) if chan.size else 0.0,
        "cosine": sum(s.cos_sum for s in stats) / cos_n if cos_n else 1.0,
    }


def compare_banks(
    reference: str | Bank,
    other: str | Bank,
    *,
    teachers: dict[str, list[int] | None] | list[str] | None = None,
    max_frames: int = 40000,
    reference_options: dict | None = None,
    other_options: dict | None = None,
) -> dict[str, dict]:
    """Per teacher layer (``"name/L3"``), the error of ``other``'s features against
    ``reference``'s (see the module's docstring), on up to ``max_frames`` frames per layer.

    ``teachers`` as :class:`BankReader` takes it; by default every layer both banks hold. The two
    banks must hold the same segments in the same shards (a recode or a convert of one another):
    a shard or segment that differs raises :class:`MissingDataError` or :class:`ShardError`
    naming it, never a number computed over different audio.
    """
    ref_bank = reference if isinstance(reference, Bank) else Bank.open(reference, reference_options)
    oth_bank = other if isinstance(other, Bank) else Bank.open(other, other_options)
    if teachers is None:
        teachers = {}
        for name, rec in ref_bank.catalog.teachers.items():
            theirs = oth_bank.catalog.teachers.get(name)
            common = sorted(set(rec.layers) & set(theirs.layers)) if theirs else []
            if common:
                teachers[name] = common
        if not teachers:
            raise MissingDataError(
                f"banks {ref_bank.root} and {oth_bank.root} hold no teacher layer in common"
            )
    ref = BankReader(ref_bank, teachers, audio=False, check="size", max_open_shards=1)
    oth = BankReader(oth_bank, ref.teachers, audio=False, check="size", max_open_shards=1)
    for name in ref.teachers:
        a, b = ref_bank.catalog.teachers[name].dim, oth_bank.catalog.teachers[name].dim
        if a != b:
            raise MissingDataError(
                f"teacher {name!r} has {a} dims in {ref_bank.root} and {b} in {oth_bank.root}: "
                "not the same teacher"
            )
    missing = [s for s in ref.shards if s not in oth_bank.catalog.shards]
    if missing:
        raise MissingDataError(
            f"bank {oth_bank.root} lacks shard {missing[0]!r} of {ref_bank.root} "
            f"({len(missing)} of {len(ref.shards)} missing): not the same segments"
        )
    stats = {(t, lay): ErrorStats() for t, layers in ref.teachers.items() for lay in layers}
    try:
        for k in spread_order(len(ref.shards)):
            shard = ref.shards[k]
            _compare_shard(ref, oth, shard, stats)
            ref.release(shard)
            oth.release(shard)
            if min(s.n for s in stats.values()) >= max_frames:
                break
    finally:
        ref.close()
        oth.close()
    return {f"{t}/L{lay}": s.summary() for (t, lay), s in stats.items()}


def _compare_shard(
    ref: BankReader, oth: BankReader, shard: str, stats: dict[tuple[str, int], ErrorStats]
) -> None:
    ids_a = [s.id for s in ref.segments(shard)]
    ids_b = [s.id for s in oth.segments(shard)]
    if ids_a != ids_b:
        longer = ids_a if len(ids_a) > len(ids_b) else ids_b
        diff = next(
            (a for a, b in zip(ids_a, ids_b, strict=False) if a != b),
            longer[min(len(ids_a), len(ids_b))],
        )
        raise ShardError(
            f"the banks hold different segments ({len(ids_a)} vs {len(ids_b)}; first "
            "difference shown): not the same segments",
            shard=shard,
            segment=diff,
        )
    for i, seg_id in enumerate(ids_a):
        a, b = ref.read(shard, i), oth.read(shard, i)
        for (t, lay), st in stats.items():
            x = a.features.get(t, {}).get(lay)
            y = b.features.get(t, {}).get(lay)
            if (x is None) != (y is None):
                raise ShardError(
                    f"teacher {t!r} layer {lay} is in one bank and not the other",
                    shard=shard,
                    segment=seg_id,
                )
            if x is None:
                continue
            if x.shape != y.shape:
                raise ShardError(
                    f"teacher {t!r} layer {lay}: {tuple(x.shape)} frames in one bank, "
                    f"{tuple(y.shape)} in the other",
                    shard=shard,
                    segment=seg_id,
                )
            st.add(x, y)
