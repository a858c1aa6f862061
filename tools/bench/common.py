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
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(1):
            yield
    else:
        yield
    torch.set_num_threads(before)


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
