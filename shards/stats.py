"""Per-layer statistics (mean / std / absmax per channel) over a whole bank, computed with Dask -
one task per shard, merged with Chan's parallel variance formula - and stored in the catalog for
target normalization."""

from __future__ import annotations

import numpy as np

from .bank import Bank
from .reader import BankReader


def _shard_moments(root: str, storage_options: dict | None, shard: str, teachers: dict) -> dict:
    reader = BankReader(
        root, teachers, audio=False, shards=[shard], storage_options=storage_options
    )
    acc: dict = {}
    for sd in reader.iter_shard(shard):
        for t, layers in sd.features.items():
            for layer, x in layers.items():
                if not len(x):
                    continue
                x64 = x.astype(np.float64)
                n, mean = x64.shape[0], x64.mean(0)
                m2 = ((x64 - mean) ** 2).sum(0)
                amax = np.abs(x).max(0).astype(np.float64)
                acc[(t, layer)] = _merge(acc.get((t, layer)), (n, mean, m2, amax))
    reader.close()
    return acc


def _merge(a, b):
    if a is None:
        return b
    if b is None:
        return a
    na, ma, m2a, xa = a
    nb, mb, m2b, xb = b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + delta**2 * (na * nb / n), np.maximum(xa, xb)


def compute_stats(
    root: str,
    *,
    teachers: dict[str, list[int] | None] | None = None,
    scheduler: str | None = None,
    storage_options: dict | None = None,
    save: bool = True,
) -> dict:
    """Compute per-layer channel statistics with Dask and (by default) store them in the catalog.

    ``scheduler``: None for Dask's local threaded scheduler, "processes", "synchronous", or the
    address of a running ``distributed`` scheduler (tcp://host:port).
    """
    import dask

    bank = Bank.open(root, storage_options)
    wanted = BankReader(bank, teachers, audio=False).teachers
    tasks = [
        dask.delayed(_shard_moments)(bank.root, storage_options, s, wanted)
        for s in sorted(bank.catalog.shards)
    ]
    if scheduler and "://" in scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            parts = client.compute(tasks, sync=True)
    else:
        parts = dask.compute(*tasks, scheduler=scheduler or "threads")
    total: dict = {}
    for part in parts:
        for key, mom in part.items():
            total[key] = _merge(total.get(key), mom)
    stats: dict = {}
    for (t, layer), (n, mean, m2, amax) in sorted(total.items()):
        stats.setdefault(t, {})[str(layer)] = {
            "count": int(n),
            "mean": mean.astype(np.float32).tolist(),
            "std": np.sqrt(m2 / max(n, 1)).astype(np.float32).tolist(),
            "absmax": amax.astype(np.float32).tolist(),
        }
    if save:
        bank.reload()
        bank.catalog.stats.update(stats)
        bank.save_catalog()
    return stats
