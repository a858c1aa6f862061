"""Multi-codebook (product) vector quantizer ``mvq``: the MVQ-KD / SPEAR route to ~16 bytes/frame.

The ``D`` channels (zero-padded to a multiple of ``codebooks``) are split into ``C`` sub-vectors;
each gets one of 256 centroids, so a frame is ``C`` uint8 codes. With ``normalize`` each frame is
divided by its L2 norm before quantization and the norm is stored as a float16 frame part. The
codebooks are fitted per teacher layer with k-means (k-means++ init, Lloyd iterations), vectorized
over codebooks in torch and deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .codecs import ZSTD, Codec, PartSpec, register_codec
from .errors import CodecError

K = 256  # entries per codebook (one uint8 code)


def _sq_dist(x: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """Squared distances (C, N, K) between sub-vectors x (C, N, S) and centroids cb (C, K, S)."""
    d = torch.baddbmm((cb * cb).sum(-1)[:, None, :], x, cb.transpose(1, 2), alpha=-2.0)
    return d.add_((x * x).sum(-1, keepdim=True)).clamp_(min=0)


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding, one codebook per leading index: x (C, N, S) -> (C, k, S)."""
    c, n, _ = x.shape
    ar = torch.arange(c)
    first = torch.randint(n, (c,), generator=gen)
    centers = [x[ar, first]]  # each (C, S)
    best = ((x - centers[0][:, None]) ** 2).sum(-1)  # (C, N)
    for _ in range(1, k):
        # a codebook whose points all sit on chosen centers (constant data) samples uniformly
        weights = torch.where(best.sum(1, keepdim=True) > 0, best, torch.ones_like(best))
        pick = torch.multinomial(weights, 1, generator=gen)[:, 0]
        centers.append(x[ar, pick])
        best = torch.minimum(best, ((x - centers[-1][:, None]) ** 2).sum(-1))
    return torch.stack(centers, 1)


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means on (C, N, S) sub-vectors, all codebooks at once; empty clusters keep their
    centroid."""
    gen = torch.Generator().manual_seed(seed)
    cb = _kmeans_pp(x, k, gen)
    c, _, s = x.shape
    for _ in range(iters):
        assign = _sq_dist(x, cb).argmin(-1)  # (C, N)
        sums = torch.zeros(c, k, s).scatter_add_(1, assign[..., None].expand_as(x), x)
        counts = torch.zeros(c, k).scatter_add_(
            1, assign, torch.ones_like(assign, dtype=torch.float32)
        )
        cb = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], cb)
    return cb


@register_codec
@dataclass(frozen=True)
class MultiVQ(Codec):
    """Product VQ: ``codebooks`` x 256 centroids; ``codebooks`` bytes per frame (+2 with
    ``normalize``)."""

    name: ClassVar[str] = "mvq"
    needs_fit: ClassVar[bool] = True
    codebooks: int = 16
    normalize: bool = False
    iters: int = 10
    seed: int = 0
    max_fit_frames: int = 50000

    def __post_init__(self):
        if not 1 <= self.codebooks <= 4096:
            raise ValueError("codebooks must be in [1, 4096]")
        if self.iters < 0 or self.max_fit_frames < 1:
            raise ValueError("iters must be >= 0 and max_fit_frames >= 1")

    def parts(self, dim):
        specs = [PartSpec("codes", "frame", "uint8", (self.codebooks,), ZSTD)]
        if self.normalize:
            specs.append(PartSpec("norm", "frame", "float16", (1,), ZSTD))
        return specs

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (C, N, S) sub-vectors after zero-padding D to a multiple of C."""
        n, d = x.shape
        s = -(-d // self.codebooks)
        xp = torch.nn.functional.pad(x, (0, s * self.codebooks - d))
        return xp.reshape(n, self.codebooks, s).transpose(0, 1)

    def _prepare(self, x: torch.Tensor, mean: torch.Tensor):
        y = x - mean
        if not self.normalize:
            return y, None
        norm = y.norm(
            dim=1, keepdim=True
        )  # (N, 1); encode's rows_ok has refused norms beyond float16
        norm = norm.to(torch.float16).float()
        return y / torch.where(norm > 0, norm, torch.ones_like(norm)), norm

    def fit(self, sample):
        x = np.asarray(sample, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0 or not np.isfinite(x).all():
            raise CodecError("codec mvq: fit needs a finite, non-empty (N, D) sample")
        if x.shape[0] > self.max_fit_frames:  # deterministic subsample
            idx = np.random.default_rng(self.seed).choice(
                x.shape[0], self.max_fit_frames, replace=False
            )
            x = x[np.sort(idx)]
        xt = torch.from_numpy(x)
        mean = xt.mean(0)
        y, _ = self._prepare(xt, mean)
        cb = kmeans(self._split(y), K, self.iters, self.seed)  # (C, K, S)
        return {
            "codebooks": cb.numpy(),
            "mean": mean.numpy(),
            "dim": np.array([x.shape[1]], np.int64),
        }

    def _state(self, state, dim: int, device):
        if not state or "codebooks" not in state:
            raise CodecError("codec mvq: encode needs the fitted state (codebooks, mean, dim)")
        # the fitted dim from the mean's shape: reading state["dim"] from a device would sync
        fitted = tuple(state["mean"].shape)[-1]
        if fitted != dim:
            raise CodecError(f"codec mvq: state fitted for dim {fitted}, features have dim {dim}")
        cb = torch.as_tensor(state["codebooks"], dtype=torch.float32, device=device)
        if cb.shape[0] != self.codebooks:
            raise CodecError(
                f"codec mvq: state has {cb.shape[0]} codebooks, codec has {self.codebooks}"
            )
        return cb, torch.as_tensor(state["mean"], dtype=torch.float32, device=device)

    range_error: ClassVar[str] = "frame norms exceed the float16 range"

    def rows_ok(self, x, state=None):
        ok = torch.isfinite(x).all(-1)
        if self.normalize:
            _, mean = self._state(state, x.shape[-1], x.device)
            ok &= (x.float() - mean).norm(dim=-1) <= 65504.0
        return ok

    def _encode(self, x, state=None):
        x = x.float()
        cb, mean = self._state(state, x.shape[1], x.device)
        y, norm = self._prepare(x, mean)
        codes = _sq_dist(self._split(y), cb).argmin(-1).to(torch.uint8).T.contiguous()  # (T, C)
        out = {"codes": codes}
        if self.normalize:
            out["norm"] = norm.to(torch.float16)
        return out

    def decode(self, parts, state=None):
        if not state or "codebooks" not in state:
            raise CodecError("codec mvq: decode needs the fitted state (codebooks, mean, dim)")
        cb = np.asarray(state["codebooks"], dtype=np.float32)  # (C, K, S)
        dim = int(np.asarray(state["dim"]).reshape(-1)[0])
        codes = np.asarray(parts["codes"])  # (T, C)
        c, _, s = cb.shape
        flat = cb.reshape(c * K, s)
        idx = codes.astype(np.intp) + np.arange(c, dtype=np.intp) * K  # (T, C)
        out = flat[idx].reshape(codes.shape[0], c * s)
        if out.shape[1] != dim:
            out = np.ascontiguousarray(out[:, :dim])
        if self.normalize:
            out *= np.asarray(parts["norm"], dtype=np.float32)
        out += np.asarray(state["mean"], dtype=np.float32)
        return out
