"""The distillation loss: per target, L1 / D - log sigmoid(cos), averaged over valid frames, then
weighted over teachers (domain-aware) and averaged over each teacher's targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audistill.shards.devices import host_to_device, length_mask

from .align import align
from .heads import Heads
from .weights import domain_weights


def l1_cos(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) x2, lengths (B,) -> per-sample loss (B,): mean over valid frames of
    mean|pred - target| - log sigmoid(cos(pred, target))."""
    pred, target = pred.float(), target.float()
    per_frame = (pred - target).abs().mean(-1) - F.logsigmoid(
        F.cosine_similarity(pred, target, dim=-1)
    )  # (B, T)
    mask = length_mask(lengths, pred.shape[1], pred.device)
    return (per_frame * mask).sum(1) / lengths.to(pred.device).clamp(min=1)


def distill_loss(
    hidden: list[torch.Tensor],
    s_len: torch.Tensor,
    student_hop: int,
    heads: Heads,
    batch: dict,
    teacher_hops: dict[str, float],
    homes: dict[str, str],
    omega: float,
    norm: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one micro-batch: sum over samples of the weighted per-sample loss, divided by
    ``norm`` (the number of samples in the global batch, times 1 / world size under DDP).

    ``batch["targets"][teacher][layer]`` (B, T, Dt), ``batch["target_lengths"][teacher]`` (B,),
    ``batch["present"][teacher]`` (B,) bool. Returns the loss and per-target mean losses over the
    items a teacher covers (0-dim tensors on the device: reading them is the caller's sync).
    """
    names = list(teacher_hops)
    present = torch.stack([batch["present"][n] for n in names], 1)  # (B, M)
    w = host_to_device(
        domain_weights(batch["domains"], [homes[n] for n in names], present, omega), s_len.device
    )  # (B, M)
    per_teacher: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    logs: dict[str, torch.Tensor] = {}
    for tgt in heads.targets:
        z = batch["targets"][tgt.teacher][tgt.teacher_layer]
        x, z, n = align(
            hidden[tgt.student_layer],
            s_len,
            z,
            batch["target_lengths"][tgt.teacher].to(s_len.device),
            student_hop,
            teacher_hops[tgt.teacher],
        )
        per = l1_cos(heads(tgt, x), z, n)  # (B,)
        per_teacher[tgt.teacher].append(per)
        p = batch["present"][tgt.teacher]  # (B,) bool on the host: no device sync to test it
        if bool(p.any()):
            on = host_to_device(p, per.device)
            logs[f"loss/{tgt.key}"] = (
                torch.where(on, per.detach(), 0.0).sum() / on.sum()
            )  # on the device
    total = torch.zeros((), device=s_len.device)
    for m, n in enumerate(names):
        per = torch.stack(per_teacher[n], 0).mean(0)  # (B,)
        total = total + (w[:, m] * per).sum()
    return total / norm, logs
