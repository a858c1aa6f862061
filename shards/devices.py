"""Small host/device helpers shared by the codecs, the teachers, extraction and training."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, then put back (also on error)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def host_to_device(x, device) -> torch.Tensor:
    """A small host tensor (or list) on ``device`` without a stream sync: a plain ``.to("cuda")``
    from pageable memory waits for every kernel queued before it, which would stop the host from
    running ahead of the device. Through pinned memory the copy is queued like a kernel."""
    x = torch.as_tensor(x)
    device = torch.device(device)
    if device.type != "cuda" or x.device.type == "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def length_mask(lengths, t: int, device) -> torch.Tensor:
    """``(B, t)`` bool on ``device``: True for the first ``lengths[b]`` positions of row ``b``
    (``lengths``: a host list or tensor, copied without a stream sync)."""
    device = torch.device(device)
    return torch.arange(t, device=device)[None] < host_to_device(lengths, device)[:, None]


def resolve_device(name: str) -> str:
    """``auto`` made concrete: CUDA where there is one, else the CPU; other names as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def device_problem(name: str) -> str | None:
    """Why torch device ``name`` cannot be used on this machine (None: it can), so that extraction
    and training refuse it before any work rather than when the first model moves to it."""
    if name == "auto":
        return None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        return f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps ...)"
    if dev.type == "cpu":
        return None
    backend = getattr(torch, dev.type, None) if dev.type != "mps" else torch.backends.mps
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        return f"device {name!r}: no {dev.type} device on this machine (use cpu or auto)"
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        return f"device {name!r}: this machine has {count()} {dev.type} device(s)"
    return None


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)
