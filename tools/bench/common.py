"""Shared bits of the benchmark commands: single-core pinning, timing, peak RSS, output."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table


@contextmanager
def one_core():
    """Pin numpy/torch math to one thread (throughput is reported per core)."""
    from audistill.shards.devices import torch_threads

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    with torch_threads(1):
        if threadpool_limits is not None:
            with threadpool_limits(1):
                yield
        else:
            yield


def timed(fn, *, min_seconds: float = 0.3, max_repeats: int = 50) -> float:
    """Best wall time of ``fn()`` over repeats that together take at least ``min_seconds``."""
    best, total, n = float("inf"), 0.0, 0
    while (total < min_seconds or n < 2) and n < max_repeats:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, n = min(best, dt), total + dt, n + 1
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(result: dict, table: Table | None, as_json: bool, notes: list[str] | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console = Console(width=None if Console().is_terminal else 160)
    if table is not None:
        console.print(table)
    for n in notes or []:
        console.print(n, highlight=False)


def cpu_note() -> str:
    return f"{os.cpu_count()} CPU(s) visible; throughput per core (1 thread)"


def real_bank(
    root: str,
    shards: int = 1,
    layers: int = 4,
    segments: int = 8,
    dim: int = 1024,
    storage_options: dict | None = None,
):
    """A real Zarr bank of ``shards`` shards of ``segments`` segments (2-9 s): one ``dim``-wide
    teacher at 50 Hz, ``layers`` layers, float16."""
    import numpy as np
    import torch

    from audistill.shards.bank import Bank
    from audistill.shards.catalog import TeacherRecord
    from audistill.shards.codecs import get_codec
    from audistill.shards.segments import SAMPLE_RATE, Segment, make_segment_id

    bank = Bank.create(root, "zarr", storage_options)
    codec = get_codec("float16")
    keep = list(range(1, layers + 1))
    bank.register_teacher(
        TeacherRecord(
            name="wavlm",
            source="bench/wavlm",
            dim=dim,
            frame_rate=50.0,
            codec=codec.record(),
            layers=keep,
            num_layers=25,
            revision="r",
            fingerprint="f" * 64,
            home_domain="speech",
            domains=[],
        )
    )
    rng = np.random.default_rng(0)
    for s in range(shards):
        with bank.write_shard(
            "shard-template" if shards == 1 else f"shard-{s:05d}", ["wavlm"]
        ) as w:
            for k in range(segments):
                n = SAMPLE_RATE * (2 + k)
                src = f"corpus/s{s}/clip{k}.wav"
                seg = Segment(make_segment_id(src), src, 0.0, None, "speech", "bench", n)
                feats = {
                    layer: codec.encode(
                        torch.from_numpy(rng.standard_normal((n // 320, dim)).astype("float32")),
                        None,
                    )
                    for layer in keep
                }
                w.add(seg, rng.integers(-3000, 3000, n).astype(np.int16), {"wavlm": feats})
    return Bank.open(root, storage_options)
