"""The USAD student: log-mel -> 2-D conv front-end (stride 2 or 4 in time) -> LayerNorm ->
convolutional positional encoding -> pre-LN Transformer with a relative position bias.

``Student.forward`` returns every hidden state: index 0 is the input of the first block, index
``l`` the output of block ``l`` (the residual stream), so layer ``l`` of the student lines up with
hidden state ``l`` of a teacher in the bank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audistill.shards.devices import length_mask
from audistill.shards.segments import SAMPLE_RATE

from .features import HOP, N_MELS, LogMel


@dataclass(frozen=True)
class StudentConfig:
    dim: int = 384
    depth: int = 12
    heads: int = 6
    ffn_mult: int = 4
    stride: int = 2  # 2 -> 50 Hz, 4 -> 25 Hz
    conv_channels: int = 128  # channels of the 2-D conv front-end
    pos_kernel: int = 128
    pos_groups: int = 16
    rel_buckets: int = 64
    rel_max_distance: int = 800
    dropout: float = 0.0
    n_mels: int = N_MELS

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / (HOP * self.stride)

    @property
    def hop(self) -> int:
        """Samples per student frame."""
        return HOP * self.stride

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> StudentConfig:
        return cls(**d)


class FrontEnd(nn.Module):
    """(B, T100, M) log-mel -> (B, T100 / stride, D): two 3x3 convs (freq / 4), then a linear."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        c = cfg.conv_channels
        self.conv1 = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, stride=(cfg.stride // 2, 2), padding=1)
        self.proj = nn.Linear(c * math.ceil(math.ceil(cfg.n_mels / 2) / 2), cfg.dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel.unsqueeze(1)))  # (B, C, T/2, M/2)
        x = F.gelu(self.conv2(x))  # (B, C, T/stride, M/4)
        b, c, t, m = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * m))  # (B, T', D)


class ConvPos(nn.Module):
    """wav2vec2-style convolutional positional encoding, added to its input."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        y = self.conv(x.transpose(1, 2))  # (B, D, T + trim)
        if self.trim:
            y = y[..., :-1]
        return x + F.gelu(y).transpose(1, 2)


def relative_buckets(t: int, num_buckets: int, max_distance: int, device) -> torch.Tensor:
    """T5 bidirectional relative position buckets, (T, T) int64."""
    pos = torch.arange(t, device=device)
    rel = pos[None, :] - pos[:, None]  # (T, T) key - query
    half = num_buckets // 2
    out = (rel > 0).long() * half
    n = rel.abs()
    exact = half // 2
    large = (
        exact
        + (
            torch.log(n.float().clamp(min=1) / exact)
            / math.log(max_distance / exact)
            * (half - exact)
        ).long()
    )
    large = large.clamp(max=half - 1)
    return out + torch.where(n < exact, n, large)


class Block(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        d, self.heads = cfg.dim, cfg.heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, cfg.ffn_mult * d), nn.Linear(cfg.ffn_mult * d, d)
        self.rel = nn.Embedding(cfg.rel_buckets, cfg.heads)
        self.drop = cfg.dropout

    def forward(
        self, x: torch.Tensor, buckets: torch.Tensor, pad: torch.Tensor | None
    ) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )
        bias = self.rel(buckets).permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # (1, H, T, T)
        if pad is not None:  # (B, T) True where padded
            bias = bias.masked_fill(pad[:, None, None, :], torch.finfo(q.dtype).min)
        p = self.drop if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)  # (B, H, T, Dh)
        x = x + F.dropout(self.out(a.transpose(1, 2).reshape(b, t, d)), p, self.training)
        return x + F.dropout(self.ff2(F.gelu(self.ff1(self.ln2(x)))), p, self.training)


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = LogMel(cfg.n_mels)
        self.front = FrontEnd(cfg)
        self.ln = nn.LayerNorm(cfg.dim)
        self.pos = ConvPos(cfg.dim, cfg.pos_kernel, cfg.pos_groups)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))

    @property
    def num_layers(self) -> int:
        """Hidden states returned (depth + 1)."""
        return self.cfg.depth + 1

    def num_frames(self, num_samples: torch.Tensor | int):
        return num_samples // self.cfg.hop

    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``wave`` (B, N) float at 16 kHz, ``lengths`` (B,) samples -> depth + 1 tensors (B, T, D).
        ``lengths`` on the host keeps the forward free of host syncs."""
        t = wave.shape[1] // self.cfg.hop
        x = self.ln(self.front(self.mel(wave))[:, :t])  # (B, T, D)
        pad = None
        if lengths is not None:
            frames = self.num_frames(lengths)
            if bool((frames < t).any()):  # host lengths (the trainer's): no device sync
                pad = ~length_mask(frames, t, x.device)  # (B, T)
                x = x.masked_fill(pad[..., None], 0.0)
        x = self.pos(x)
        buckets = relative_buckets(t, self.cfg.rel_buckets, self.cfg.rel_max_distance, x.device)
        hidden = [x]
        for blk in self.blocks:
            x = blk(x, buckets, pad)
            hidden.append(x)
        return hidden


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
