"""Feature codecs: how a teacher layer's float features become stored arrays and back.

A codec turns one segment's features ``x`` of shape ``(T, D)`` into named *parts*. Each part is
described by a :class:`PartSpec`:

* ``kind="frame"``: the leading axis is the frame axis (``T`` rows); parts of consecutive
  segments are concatenated along it in a shard.
* ``kind="segment"``: exactly one row per segment (for example per-channel scales).

Some codecs are *fitted* on a sample of features (a vector quantizer's codebooks, a decorrelating
transform). Their fitted *state* is a dict of numpy arrays, stored once per (teacher, layer) in the
bank (``codec_state/``) and referenced from the catalog.

Encoding is vectorized torch, so extraction can run it on the GPU before the copy to host.
Decoding is numpy, for data-loader workers. After the codec, every part goes through a lossless
compressor described by a numcodecs configuration (``compressor``) - the same bytes in the Zarr
and the WebDataset layout, so conversion between them is exact.

Codecs are small frozen dataclasses with a ``name``, a ``version`` and a JSON ``config()``; the
catalog records ``{"name", "version", "config"}`` and :func:`codec_from_record` rebuilds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Literal

import numpy as np
import torch

from .devices import length_mask
from .errors import CodecError

PartKind = Literal["frame", "segment"]


@dataclass(frozen=True)
class PartSpec:
    name: str
    kind: PartKind
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]  # trailing shape (after the leading frame / segment axis)
    compressor: dict  # numcodecs config, e.g. {"id": "zstd", "level": 3}


ZSTD = {"id": "zstd", "level": 3}


def blosc_shuffle(typesize: int, shuffle: str = "bitshuffle", clevel: int = 5) -> dict:
    code = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[shuffle]
    return {"id": "blosc", "cname": "zstd", "clevel": clevel, "shuffle": code, "typesize": typesize}


@dataclass(frozen=True)
class Codec:
    """Base of all codecs. Subclasses set ``name``/``version`` and implement the four methods."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    lossless: ClassVar[bool] = False
    needs_fit: ClassVar[bool] = False
    # True when any row range of the frame parts decodes on its own (crops need no neighbours).
    row_independent: ClassVar[bool] = True
    # The narrowest dtype holding every value ``decode`` returns exactly ("float32", "float16" or
    # "bfloat16"): a loader may hand decoded frames on in it (half the bytes) and lose nothing.
    decoded_dtype: ClassVar[str] = "float32"

    def config(self) -> dict:
        return asdict(self)

    def record(self) -> dict:
        return {"name": self.name, "version": self.version, "config": self.config()}

    def parts(self, dim: int) -> list[PartSpec]:
        raise NotImplementedError

    def fit(self, sample: np.ndarray) -> dict[str, np.ndarray]:
        """Fit state on a ``(N, D)`` float sample. Codecs that need none return ``{}``."""
        return {}

    def encode(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Parts of one segment ``(T, D)``; CodecError on NaN/Inf or values the codec cannot
        represent."""
        self.check_input(x)
        if x.numel() and not bool(self.rows_ok(x, state).all()):
            raise CodecError(f"codec {self.name}: {self.range_error}")
        return self._encode(x, state)

    # What ``rows_ok`` refuses besides NaN/Inf, for the error message.
    range_error: ClassVar[str] = "features contain NaN or Inf"

    def _encode(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """The codec's arithmetic on checked input: no validation, no host synchronization."""
        raise NotImplementedError

    def rows_ok(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``(..., T)`` bool: frames the codec represents (finite, within its range). No sync."""
        return torch.isfinite(x).all(-1)

    def encode_padded(
        self, x: torch.Tensor, lengths: list[int], state: dict[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Encode a padded batch ``(B, T, D)`` with valid frame counts ``lengths`` without any host
        sync.

        Returns ``(parts, ok)``: frame parts shaped ``(B, T, ...)``, segment parts ``(B, 1, ...)``
        (item ``b``'s parts are ``[b, :lengths[b]]`` and ``[b]``, equal to ``encode(x[b, :n])``),
        and ``ok`` ``(B,)`` bool on the device: False where an item has a frame ``encode`` would
        refuse (its parts are then meaningless). Padding frames never affect valid ones.
        """
        x = x.float()
        mask = length_mask(lengths, x.shape[1], x.device)  # (B, T)
        good = self.rows_ok(x, state) | ~mask
        return self._encode_padded(x, good & mask, lengths, state), good.all(1)

    def _encode_padded(
        self, x: torch.Tensor, valid: torch.Tensor, lengths: list[int], state
    ) -> dict[str, torch.Tensor]:
        """``encode_padded``'s parts; ``valid`` (B, T) marks the frames to encode (the others -
        padding, refused frames - must not affect them). By default they are zeroed and the batch
        is encoded as rows (row-independent frame-only codecs) or item by item."""
        b, t, d = x.shape
        x = torch.where(valid[..., None], x, 0.0)
        if self.row_independent and all(p.kind == "frame" for p in self.parts(d)):
            rows = self._encode(x.reshape(b * t, d), state)
            return {k: v.reshape(b, t, *v.shape[1:]) for k, v in rows.items()}
        return self._encode_items(x, lengths, state)

    def _encode_items(self, x: torch.Tensor, lengths: list[int], state) -> dict[str, torch.Tensor]:
        """``encode_padded``'s fallback: one ``_encode`` per item, assembled into padded parts."""
        b, t, _ = x.shape
        out: dict[str, torch.Tensor] = {}
        for i, n in enumerate(lengths):
            for k, v in self._encode(x[i, :n], state).items():
                if k not in out:
                    kind = next(p.kind for p in self.parts(x.shape[2]) if p.name == k)
                    out[k] = v.new_zeros((b, t if kind == "frame" else 1, *v.shape[1:]))
                out[k][i, : v.shape[0]] = v
        return out

    def decode(
        self, parts: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def decode_into(
        self, parts: dict[str, np.ndarray], state: dict[str, np.ndarray] | None, out: np.ndarray
    ) -> None:
        """``decode`` written into ``out`` ``(T, D)``: float32, or ``decoded_dtype`` (bfloat16 as
        its raw bits in a uint16 array). Codecs whose parts already hold the values copy them
        once."""
        np.copyto(out, self.decode(parts, state), casting="same_kind")

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2:
            raise CodecError(
                f"codec {self.name}: expected (frames, dim) features, got shape {tuple(x.shape)}"
            )
        if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
            raise CodecError(f"codec {self.name}: features contain NaN or Inf")


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    if not cls.name:
        raise CodecError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def codec_names() -> list[str]:
    return sorted(_REGISTRY)


def get_codec(name: str, **config) -> Codec:
    """Build a codec by name; unknown names or parameters raise CodecError listing what exists."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(codec_names())}") from None
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise CodecError(f"codec {name!r} has no parameter(s) {unknown}; it takes {sorted(known)}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        raise CodecError(f"codec {name!r}: bad configuration {config}: {e}") from e


def codec_from_record(record: dict) -> Codec:
    """Rebuild the codec a catalog record describes; refuse versions this code cannot decode."""
    cls = _REGISTRY.get(record.get("name", ""))
    if cls is None:
        raise CodecError(
            f"bank uses codec {record.get('name')!r}, unknown to this audistill; known: "
            f"{', '.join(codec_names())}"
        )
    if int(record.get("version", 0)) > cls.version:
        raise CodecError(
            f"bank uses codec {cls.name!r} version {record['version']}, this audistill decodes up "
            "to "
            f"version {cls.version}; upgrade audistill"
        )
    return get_codec(cls.name, **record.get("config", {}))


# ---------------------------------------------------------------------------------------------
# Float codecs


@register_codec
@dataclass(frozen=True)
class Float32(Codec):
    """Lossless float32 (the reference every lossy codec is measured against)."""

    name: ClassVar[str] = "float32"
    lossless: ClassVar[bool] = True

    def parts(self, dim: int) -> list[PartSpec]:
        return [PartSpec("x", "frame", "float32", (dim,), blosc_shuffle(4, "shuffle"))]

    def _encode(self, x, state=None):
        return {"x": x.float()}

    def decode(self, parts, state=None):
        return np.asarray(parts["x"], dtype=np.float32)


@register_codec
@dataclass(frozen=True)
class Float16(Codec):
    """IEEE half precision; values beyond ±65504 are refused rather than turned into Inf."""

    name: ClassVar[str] = "float16"

    def parts(self, dim: int) -> list[PartSpec]:
        return [PartSpec("x", "frame", "float16", (dim,), blosc_shuffle(2, "shuffle"))]

    range_error: ClassVar[str] = "features exceed the float16 range (use bfloat16 or int8)"

    def rows_ok(self, x, state=None):
        return (x.abs() <= 65504.0).all(-1)  # NaN compares False

    def _encode(self, x, state=None):
        return {"x": x.to(torch.float16)}

    decoded_dtype: ClassVar[str] = "float16"

    def decode(self, parts, state=None):
        return np.asarray(parts["x"]).astype(np.float32)

    def decode_into(self, parts, state, out):
        np.copyto(out, parts["x"], casting="safe")


@register_codec
@dataclass(frozen=True)
class BFloat16(Codec):
    """bfloat16 (round to nearest even), stored as its raw 16 bits in a uint16 part."""

    name: ClassVar[str] = "bfloat16"

    def parts(self, dim: int) -> list[PartSpec]:
        return [PartSpec("x", "frame", "uint16", (dim,), blosc_shuffle(2, "bitshuffle"))]

    def _encode(self, x, state=None):
        return {"x": x.to(torch.bfloat16).view(torch.int16).view(torch.uint16)}

    decoded_dtype: ClassVar[str] = "bfloat16"

    def decode(self, parts, state=None):
        bits = np.asarray(parts["x"]).astype(np.uint32) << 16
        return bits.view(np.float32)

    def decode_into(self, parts, state, out):
        if out.dtype == np.uint16:  # bfloat16 bits
            np.copyto(out, parts["x"], casting="no")
        else:
            np.copyto(
                out.view(np.uint32), np.left_shift(np.asarray(parts["x"], dtype=np.uint32), 16)
            )


# Integer and vector-quantizer codecs live in their own modules; importing them registers them.
from . import codecs_quant as _codecs_quant  # noqa: E402,F401
from . import codecs_vq as _codecs_vq  # noqa: E402,F401
