"""Integer codecs: int8 per row / per channel, int4 groups, and int8 time-delta (``int8-delta``).

Imported at the bottom of :mod:`codecs` so the codecs register. Encoding is vectorized torch
(runs on the device the features live on), decoding is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .codecs import ZSTD, Codec, PartSpec, register_codec
from .errors import CodecError

F16_MAX = 65504.0


def small_part(typesize: int = 1) -> dict:
    """Compressor for tiny parts (a row per segment): blosc-lz4 decodes in ~3 us where numcodecs'
    zstd spends ~10 us setting up per call."""
    return {
        "id": "blosc",
        "cname": "lz4",
        "clevel": 5,
        "shuffle": 1 if typesize > 1 else 0,
        "typesize": typesize,
    }


def _safe(scale: torch.Tensor) -> torch.Tensor:
    """Scale with zeros replaced by 1, so all-zero rows/channels/groups divide safely (to 0)."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _scale_to(scale: torch.Tensor, dtype: str) -> torch.Tensor:
    """Cast a non-negative scale to its storage dtype (``rows_ok`` has refused float16 overflow)."""
    return scale.to(torch.float16) if dtype == "float16" else scale.float()


@register_codec
@dataclass(frozen=True)
class Int8Row(Codec):
    """int8 with one absmax scale per frame (row): robust to loud frames, blind to loud channels."""

    name: ClassVar[str] = "int8-row"
    scale_dtype: str = "float16"

    def __post_init__(self):
        if self.scale_dtype not in ("float16", "float32"):
            raise ValueError("scale_dtype must be 'float16' or 'float32'")

    def parts(self, dim):
        return [
            PartSpec("q", "frame", "int8", (dim,), ZSTD),
            PartSpec("scale", "frame", self.scale_dtype, (1,), ZSTD),
        ]

    range_error: ClassVar[str] = "scale exceeds the float16 range (use scale_dtype='float32')"

    def rows_ok(self, x, state=None):
        ok = torch.isfinite(x).all(-1)
        if self.scale_dtype == "float16":
            ok &= x.abs().amax(-1) * (1.0 / 127.0) <= F16_MAX
        return ok

    def _encode(self, x, state=None):
        x = x.float()
        scale = _scale_to(
            x.abs().amax(dim=1, keepdim=True) * (1.0 / 127.0) if x.shape[0] else x.new_zeros(0, 1),
            self.scale_dtype,
        )  # (T, 1)
        q = torch.round(x / _safe(scale.float())).clamp_(-127, 127).to(torch.int8)
        return {"q": q, "scale": scale}

    def decode(self, parts, state=None):
        q = np.asarray(parts["q"])
        out = q.astype(np.float32)
        out *= np.asarray(parts["scale"], dtype=np.float32)
        return out


@register_codec
@dataclass(frozen=True)
class Int8Channel(Codec):
    """int8 with one absmax scale per channel per segment (a (1, D) segment part)."""

    name: ClassVar[str] = "int8-channel"

    def parts(self, dim):
        return [
            PartSpec("q", "frame", "int8", (dim,), ZSTD),
            PartSpec("scale", "segment", "float32", (dim,), small_part(4)),
        ]

    def _encode(self, x, state=None):
        x = x.float()
        if x.shape[0] == 0:
            return {"q": x.to(torch.int8), "scale": x.new_zeros(1, x.shape[1])}
        scale = x.abs().amax(dim=0, keepdim=True) * (1.0 / 127.0)  # (1, D); same op on CPU and CUDA
        q = torch.round(x / _safe(scale)).clamp_(-127, 127).to(torch.int8)
        return {"q": q, "scale": scale}

    def decode(self, parts, state=None):
        out = np.asarray(parts["q"]).astype(np.float32)
        out *= np.asarray(parts["scale"], dtype=np.float32).reshape(1, -1)
        return out


@register_codec
@dataclass(frozen=True)
class Int4Group(Codec):
    """4-bit symmetric (-7..7) with a float16 absmax scale per group of ``group`` channels per
    frame.

    Two values per byte: the low nibble holds the even channel. ``D`` is zero-padded to a multiple
    of ``group``; the number of padded channels is stored as a (1, 1) segment part ``pad``.
    """

    name: ClassVar[str] = "int4-group"
    group: int = 32

    def __post_init__(self):
        if self.group < 2 or self.group % 2:
            raise ValueError("group must be an even number >= 2")

    def _padded(self, dim: int) -> int:
        return -(-dim // self.group) * self.group

    def parts(self, dim):
        dp = self._padded(dim)
        return [
            PartSpec("q", "frame", "uint8", (dp // 2,), ZSTD),
            PartSpec("scale", "frame", "float16", (dp // self.group,), ZSTD),
            PartSpec("pad", "segment", "uint8", (1,), small_part()),
        ]

    range_error: ClassVar[str] = "scale exceeds the float16 range"

    def rows_ok(self, x, state=None):
        return torch.isfinite(x).all(-1) & (x.abs() * (1.0 / 7.0) <= F16_MAX).all(-1)

    def _encode(self, x, state=None):
        t, d = x.shape
        dp = self._padded(d)
        xp = torch.nn.functional.pad(x.float(), (0, dp - d)).reshape(
            t, dp // self.group, self.group
        )
        scale = _scale_to(xp.abs().amax(dim=2) * (1.0 / 7.0), "float16")  # (T, G)
        q = torch.round(xp / _safe(scale.float())[..., None]).clamp_(-7, 7).to(torch.int16) + 8
        q = q.reshape(t, dp // 2, 2)
        packed = (q[..., 0] | (q[..., 1] << 4)).to(torch.uint8)  # (T, Dp/2)
        pad = torch.full((1, 1), dp - d, dtype=torch.uint8, device=x.device)
        return {"q": packed, "scale": scale, "pad": pad}

    def decode(self, parts, state=None):
        packed = np.asarray(parts["q"])
        scale = np.asarray(parts["scale"], dtype=np.float32)
        pad = int(np.asarray(parts["pad"]).reshape(-1)[0])
        t = packed.shape[0]
        nib = np.empty((t, packed.shape[1], 2), np.int8)
        np.bitwise_and(packed, 15, out=nib[..., 0], casting="unsafe")
        np.right_shift(packed, 4, out=nib[..., 1], casting="unsafe")
        nib -= 8
        out = nib.reshape(t, scale.shape[1], self.group).astype(np.float32)
        out *= scale[..., None]
        out = out.reshape(t, scale.shape[1] * self.group)
        return out[:, : out.shape[1] - pad] if pad else out


def _delta_fit_steps(
    sample: np.ndarray, target: float, margin: float, chan_target: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (center, step) for ``int8-delta`` meeting ``target`` relative L2 on ``sample``.

    One uniform step ``s`` for all channels is the MSE-optimal choice for relative L2, but with a
    few loud channels it would crush the quiet ones; so each channel's step is capped at
    ``chan_target * sqrt(12) * std_c`` (its own relative error stays <= ``chan_target``). Channels
    whose sample range (times ``margin``) does not fit 255 levels get a larger step. ``s`` is found
    by bisection so the expected error sum_c step_c^2 / 12 equals target^2 * mean(x^2) per value.
    """
    x = np.asarray(sample, dtype=np.float64)
    lo, hi = x.min(0), x.max(0)
    center = (lo + hi) / 2
    need = (hi - lo) * margin / 254.0  # smallest step that keeps the channel inside 255 levels
    std = x.std(0)
    cap = np.where(std > 0, np.maximum(chan_target * np.sqrt(12.0) * std, need), np.inf)
    budget = target**2 * float(np.mean(x * x)) * 12.0 * x.shape[1]  # allowed sum of step^2
    if budget <= 0:  # all-zero sample: any step is exact for zeros
        return center.astype(np.float32), np.maximum(need, 1.0).astype(np.float32)

    def steps(s: float) -> np.ndarray:
        return np.clip(s, need, cap)

    a, b = 0.0, np.sqrt(budget)
    if float(np.sum(need**2)) >= budget:  # the range alone uses the budget: take the range steps
        s = 0.0
    else:
        for _ in range(60):
            s = (a + b) / 2
            a, b = (s, b) if float(np.sum(steps(s) ** 2)) <= budget else (a, s)
        s = a
    step = steps(s)
    step = np.where(step > 0, step, max(s, 1e-30))
    return center.astype(np.float32), step.astype(np.float32)


def _wrapping_prefix_sum(d: np.ndarray, block: int) -> np.ndarray:
    """Cumulative sum modulo 256 along axis 0 of a (T, D) uint8 array (in place), fast in numpy.

    ``np.cumsum(axis=0)`` walks one column at a time (~400 M values/s). Instead: prefix sums inside
    blocks of ``block`` rows, all blocks at once (``block - 1`` wide vector additions), then the
    running total of the block ends (a scan over T / block rows) is added to each following block.
    """
    u = d if d.flags.writeable and d.dtype == np.uint8 else np.array(d, dtype=np.uint8)
    t, dim = u.shape
    nb = -(-t // block)
    if nb == 0:
        return u
    full = t - t % block
    blocks = u[:full].reshape(full // block, block, dim)
    for i in range(1, block):
        np.add(blocks[:, i], blocks[:, i - 1], out=blocks[:, i])
    for i in range(full + 1, t):  # the last, partial block
        np.add(u[i], u[i - 1], out=u[i])
    if nb > 1:
        ends = np.cumsum(u[block - 1 :: block][: nb - 1], axis=0, dtype=np.uint8)  # (nb-1, D)
        if full:
            blocks[1:] += ends[: full // block - 1, None, :]
        if full < t:
            u[full:] += ends[-1]
    return u


SHIFT_UNIT = 8  # int8-delta widens a channel's step in steps of 2**(1/8): at most 9% more error
# the widening factors as float32, identical in the torch encoder and the numpy decoder
SHIFT_FACTORS = np.exp2(np.arange(256) / SHIFT_UNIT).astype(np.float32)


_FACTORS_ON: dict[torch.device, torch.Tensor] = {}


def _shift_factors(device: torch.device) -> torch.Tensor:
    """SHIFT_FACTORS on ``device``, copied there once (a copy per call would sync the stream)."""
    if device not in _FACTORS_ON:
        _FACTORS_ON[device] = torch.as_tensor(SHIFT_FACTORS, device=device)
    return _FACTORS_ON[device]


@register_codec
@dataclass(frozen=True)
class Int8Delta(Codec):
    """Fitted uniform quantizer + time-delta int8, decoded by a chunked wrap-around prefix sum.

    Fit (per teacher layer): a center and a step per channel; the step is chosen for a *target*
    relative L2 error (not by absmax): one MSE-optimal uniform step, narrowed for quiet channels so
    none has a relative error above ``chan_target``, widened only for channels whose range would not
    fit 255 levels. Encode: ``u = round((x - center) / (step * 2**(shift / 8))) + 128`` as uint8,
    where the per-segment ``shift`` (a (1, D) uint8 segment part, all zero unless a segment leaves
    the fitted range) widens a channel's step just enough (by <= 9 %) to keep every value
    representable; only values beyond 2**31 times the fitted range would clip. Each frame is
    stored as its difference to the previous frame modulo 256 (the first frame as is), so zstd sees
    small numbers. Decoding is a blocked wrap-around prefix sum (see :func:`_wrapping_prefix_sum`)
    plus one multiply-add. A crop needs the frames from the segment start.
    """

    name: ClassVar[str] = "int8-delta"
    needs_fit: ClassVar[bool] = True
    row_independent: ClassVar[bool] = False
    target: float = 0.0095
    chan_target: float = 0.03
    margin: float = 1.0
    level: int = 1

    def __post_init__(self):
        if not 0 < self.target < 1:
            raise ValueError("target must be in (0, 1)")
        if not 0 < self.chan_target:
            raise ValueError("chan_target must be > 0")
        if self.margin < 1:
            raise ValueError("margin must be >= 1")

    def parts(self, dim):
        return [
            PartSpec("d", "frame", "uint8", (dim,), {"id": "zstd", "level": self.level}),
            PartSpec("shift", "segment", "uint8", (dim,), small_part()),
        ]

    def fit(self, sample):
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[0] == 0 or not np.isfinite(sample).all():
            raise CodecError(f"codec {self.name}: fit needs a finite, non-empty (N, D) sample")
        center, step = _delta_fit_steps(sample, self.target, self.margin, self.chan_target)
        return {"center": center, "step": step}

    def _state(self, state, x: torch.Tensor):
        if not state or "center" not in state or "step" not in state:
            raise CodecError(f"codec {self.name}: encode needs the fitted state (center, step)")
        c = torch.as_tensor(state["center"], dtype=torch.float32, device=x.device)
        s = torch.as_tensor(state["step"], dtype=torch.float32, device=x.device)
        if c.shape != (x.shape[1],) or s.shape != (x.shape[1],):
            raise CodecError(
                f"codec {self.name}: state is for dim {tuple(c.shape)}, features have dim "
                f"{x.shape[1]}"
            )
        return c, s

    def _encode(self, x, state=None):
        parts = self._encode_batch(x.float()[None], None, state)
        return {"d": parts["d"][0], "shift": parts["shift"][0]}

    def _encode_padded(self, x, valid, lengths, state):
        # one vectorized pass over the batch (the per-item fallback would launch ~15 kernels per
        # item)
        return self._encode_batch(x, valid[..., None], state)

    def _encode_batch(
        self, x: torch.Tensor, valid: torch.Tensor | None, state
    ) -> dict[str, torch.Tensor]:
        """(B, T, D) -> d (B, T, D), shift (B, 1, D); frames where ``valid`` is False (padding) do
        not affect the others."""
        center, step = self._state(state, x[0] if len(x) else x.new_zeros(0, x.shape[2]))
        b, t, d = x.shape
        y = x - center  # (B, T, D)
        if valid is not None:
            y = torch.where(valid, y, 0.0)
        peak = y.abs().amax(dim=1) if t else torch.zeros(b, d, device=x.device)  # (B, D)
        # smallest widening by 2**(shift / SHIFT_UNIT) keeping |y| / step_eff <= 127 (usually 0)
        need = torch.log2(torch.clamp(peak / (127.0 * step), min=1.0)) * SHIFT_UNIT
        shift = torch.ceil(need * (1 - 1e-6)).clamp_(0, 255).long()  # (B, D)
        eff = step * _shift_factors(x.device)[shift]  # (B, D)
        u = (torch.round(y / eff[:, None]).clamp_(-127, 127) + 128).to(
            torch.int16
        )  # (B, T, D) in 1..255
        prev = torch.full_like(u, 128)  # the first frame is stored relative to the center
        prev[:, 1:] = u[:, :-1]
        dlt = torch.remainder(u - prev, 256).to(torch.uint8)
        return {"d": dlt, "shift": shift.to(torch.uint8).reshape(b, 1, d)}

    def decode(self, parts, state=None):
        if not state or "center" not in state or "step" not in state:
            raise CodecError(f"codec {self.name}: decode needs the fitted state (center, step)")
        d = np.array(parts["d"], dtype=np.uint8, copy=True)
        if len(d):
            d[0] += 128  # the first frame is relative to the center level
        block = max(
            4, min(32, int(0.7 * np.sqrt(len(d))))
        )  # measured: ~8 for 150 frames, ~16 for 500
        u = _wrapping_prefix_sum(d, block)  # (T, D) levels
        shift = np.asarray(parts["shift"]).reshape(-1)
        eff = np.asarray(state["step"], dtype=np.float32) * SHIFT_FACTORS[shift]
        base = np.asarray(state["center"], dtype=np.float32) - 128.0 * eff
        out = np.multiply(u, eff, dtype=np.float32)
        out += base
        return out
