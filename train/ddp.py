"""torchrun / torch.distributed helpers: one process per GPU (or CPU process with gloo)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from audistill.shards.devices import device_problem, resolve_device

from .errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK) or run alone.

    ``device``: auto, cpu, cuda, cuda:N. NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device)
    problem = device_problem(device)
    if problem:
        raise ConfigError(f"run.device: {problem}")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local if world > 1 else 0)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world
        )
    return Dist(rank, world, local), dev


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(x: float, d: Dist, device: torch.device) -> float:
    if d.world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / d.world


def all_reduce_mean_tensor(x: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of ``x`` over the ranks (every rank calls it)."""
    x = x.clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()
