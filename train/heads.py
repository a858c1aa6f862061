"""Sparse layer-to-layer targets and their prediction heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Target:
    """Student hidden state ``student_layer`` predicts ``teacher``'s hidden state
    ``teacher_layer``."""

    teacher: str
    student_layer: int
    teacher_layer: int

    @property
    def key(self) -> str:
        return f"{self.teacher}__L{self.teacher_layer:02d}"


def sparse_map(student_depth: int, teacher_depth: int, k: int = 4) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs: student ⌊k·Ls/K⌋ <-> teacher ⌊k·Lt/K⌋, k = 1..K.

    Depths count transformer blocks (a bank record's ``num_layers - 1``)."""
    return [(i * student_depth // k, i * teacher_depth // k) for i in range(1, k + 1)]


class Heads(nn.Module):
    """One head per target: Linear(Ds, H) -> ReLU -> Linear(H, Dt)."""

    def __init__(
        self,
        targets: list[Target],
        student_dim: int,
        teacher_dims: dict[str, int],
        hidden: int | None = None,
    ):
        super().__init__()
        self.targets = list(targets)
        h = hidden or student_dim
        self.heads = nn.ModuleDict(
            {
                t.key: nn.Sequential(
                    nn.Linear(student_dim, h), nn.ReLU(), nn.Linear(h, teacher_dims[t.teacher])
                )
                for t in self.targets
            }
        )

    def forward(self, target: Target, x: torch.Tensor) -> torch.Tensor:  # (B, T, Ds) -> (B, T, Dt)
        return self.heads[target.key](x)
