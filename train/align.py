"""Frame-rate alignment between the student and a teacher.

A teacher whose hop is an integer multiple ``r`` of the student's (25 Hz vs 50 Hz: r = 2) is
matched by mean-pooling student frames (kernel r, stride r). Any other ratio (a 75 Hz teacher,
a 40 Hz one) is matched by resampling the teacher's frames to the student's rate with linear
interpolation between frame centres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pool_ratio(student_hop: float, teacher_hop: float) -> int | None:
    """``r`` when the teacher hop is ``r`` student hops (r >= 1), else None."""
    r = teacher_hop / student_hop
    ri = int(round(r))
    return ri if ri >= 1 and abs(r - ri) < 1e-6 else None


def pool_frames(x: torch.Tensor, r: int) -> torch.Tensor:
    """(B, T, D) -> (B, T // r, D) mean over non-overlapping windows of r frames."""
    if r == 1:
        return x
    return F.avg_pool1d(x.transpose(1, 2), kernel_size=r, stride=r).transpose(1, 2)


def resample_frames(z: torch.Tensor, num_out: int, ratio: float) -> torch.Tensor:
    """(B, T, D) teacher frames -> (B, num_out, D) at the student rate.

    ``ratio`` = student_hop / teacher_hop. Output frame j (centre (j + .5) * student_hop) is
    interpolated at teacher position (j + .5) * ratio - .5 (frame centres), clamped at the ends.
    """
    b, t, d = z.shape
    pos = (torch.arange(num_out, device=z.device, dtype=torch.float32) + 0.5) * ratio - 0.5
    pos = pos.clamp(0, max(t - 1, 0))
    lo = pos.floor().long().clamp(max=max(t - 1, 0))
    hi = (lo + 1).clamp(max=max(t - 1, 0))
    w = (pos - lo.float()).to(z.dtype)[None, :, None]  # (1, T', 1)
    return z[:, lo] * (1 - w) + z[:, hi] * w  # (B, T', D)


def align(
    student: torch.Tensor,
    s_len: torch.Tensor,
    teacher: torch.Tensor,
    t_len: torch.Tensor,
    student_hop: float,
    teacher_hop: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bring student hidden states (B, Ts, D) and teacher frames (B, Tt, Dt) to one frame rate.

    Returns (student', teacher', valid_lengths) with equal time lengths.
    """
    r = pool_ratio(student_hop, teacher_hop)
    if r is not None:
        student, s_len = pool_frames(student, r), s_len // r
    else:
        ratio = student_hop / teacher_hop
        n = student.shape[1]
        teacher = resample_frames(teacher, n, ratio)
        t_len = torch.floor(t_len.to(torch.float64) / ratio).long()
    t = min(student.shape[1], teacher.shape[1])
    return (
        student[:, :t],
        teacher[:, :t],
        torch.minimum(torch.minimum(s_len, t_len), torch.tensor(t)),
    )
