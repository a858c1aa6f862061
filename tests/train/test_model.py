"""The student's attention: fused scaled_dot_product_attention with its relative position bias and
key padding equals the attention written out (softmax(QK^T / sqrt(d) + bias) V)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from audistill.train.model import Block, Student, relative_buckets
from audistill.train.sizes import student_config


def _reference_block(
    blk: Block, x: torch.Tensor, buckets: torch.Tensor, pad: torch.Tensor
) -> torch.Tensor:
    b, t, d = x.shape
    h = blk.heads
    q, k, v = blk.qkv(blk.ln1(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (B, H, T, Dh)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h) + blk.rel(buckets).permute(2, 0, 1)[None]
    scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    a = scores.softmax(-1) @ v
    x = x + blk.out(a.transpose(1, 2).reshape(b, t, d))
    return x + blk.ff2(F.gelu(blk.ff1(blk.ln2(x))))


def test_fused_attention_equals_written_out_attention():
    torch.manual_seed(0)
    cfg = student_config("mini")
    blk = Block(cfg).eval()
    with torch.no_grad():
        blk.rel.weight.normal_(0, 1.0)  # a bias strong enough to matter
    b, t = 3, 57
    x = torch.randn(b, t, cfg.dim)
    buckets = relative_buckets(t, cfg.rel_buckets, cfg.rel_max_distance, "cpu")
    pad = torch.arange(t)[None] >= torch.tensor([57, 40, 9])[:, None]  # (B, T) True where padded
    got = blk(x, buckets, pad)
    want = _reference_block(blk, x, buckets, pad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_student_gives_the_same_states_with_host_or_device_lengths():
    """The trainer hands the student its lengths on the host (no device sync to test for
    padding)."""
    torch.manual_seed(0)
    s = Student(student_config("tiny")).eval()
    wave = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 9000])
    a = s(wave, lengths)
    b = s(wave, lengths.clone())
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    full = s(wave, torch.tensor([16000, 16000]))
    none = s(wave, None)
    torch.testing.assert_close(full[-1], none[-1])  # no padding: the mask path is skipped exactly
