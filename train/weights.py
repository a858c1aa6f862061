"""Domain-aware teacher weights (USAD 2.0).

For a sample of domain d and M teachers, a teacher whose home domain is d weighs
``omega / (omega + M - 1)`` and every other teacher ``1 / (omega + M - 1)``; a domain no teacher
calls home (or "unknown") gives ``1 / M`` each. ``omega = 1`` is plain multi-teacher distillation.
A teacher that skipped the sample at extraction weighs 0 and the rest are renormalized.
"""

from __future__ import annotations

import torch


def domain_weights(
    domains: list[str], homes: list[str], present: torch.Tensor, omega: float = 10.0
) -> torch.Tensor:
    """``domains`` (B,), ``homes`` (M,), ``present`` (B, M) bool -> weights (B, M), rows summing
    to 1 (or all 0 when no teacher covers the sample)."""
    raw = torch.ones(len(domains), len(homes), dtype=torch.float64)
    for i, d in enumerate(domains):
        if d != "unknown" and d in homes:
            for m, h in enumerate(homes):
                if h == d:
                    raw[i, m] = float(omega)
    raw = raw * present.to(torch.float64).cpu()
    total = raw.sum(dim=1, keepdim=True)
    return torch.where(total > 0, raw / total.clamp(min=1e-30), torch.zeros_like(raw)).float()
