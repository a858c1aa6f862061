"""What a shard field holds and how one segment's data moves in and out of it.

Shared by both layouts: a *field* is the audio, or some layers of one teacher. A teacher field
stores, per kept layer, the parts of its codec (see codecs.py): frame parts concatenated over
segments (with frame offsets), segment parts one row per segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .codecs import Codec, PartSpec, codec_from_record
from .segments import Segment

AUDIO = "audio"


@dataclass
class FieldSpec:
    """A field to write: ``teacher=None`` is the audio field."""

    name: str
    teacher: str | None = None
    layers: list[int] = field(default_factory=list)
    codec: dict | None = None  # codec record
    dim: int = 0
    _codec: Codec | None = field(default=None, init=False, repr=False, compare=False)

    def codec_obj(self) -> Codec:
        """The field's codec, built once from its record (the catalog's)."""
        assert self.codec is not None
        if self._codec is None:
            self._codec = codec_from_record(self.codec)
        return self._codec

    def part_specs(self) -> list[PartSpec]:
        return self.codec_obj().parts(self.dim)

    def attrs(self) -> dict:
        return {
            "name": self.name,
            "teacher": self.teacher,
            "layers": list(self.layers),
            "codec": self.codec,
            "dim": self.dim,
        }

    @classmethod
    def from_attrs(cls, d: dict) -> FieldSpec:
        return cls(
            name=d["name"],
            teacher=d.get("teacher"),
            layers=[int(x) for x in d.get("layers", [])],
            codec=d.get("codec"),
            dim=int(d.get("dim", 0)),
        )


def layer_key(layer: int) -> str:
    return f"L{int(layer):02d}"


def to_numpy(value, spec: PartSpec) -> np.ndarray:
    """A codec part (torch on any device, or numpy) as a C-contiguous numpy array of spec's
    dtype."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.ascontiguousarray(value)
    want = np.dtype(spec.dtype)
    if arr.dtype != want:
        if arr.dtype.itemsize == want.itemsize and arr.dtype.kind in "iu" and want.kind in "iu":
            arr = arr.view(want)
        else:
            arr = arr.astype(want)
    return arr


def check_parts(
    parts: dict, specs: list[PartSpec], num_frames: int | None, where: str
) -> tuple[dict, int]:
    """Validate one segment's parts; return them as numpy plus the segment's frame count."""
    from .errors import ShardError

    out = {}
    frames = num_frames
    for spec in specs:
        if spec.name not in parts:
            raise ShardError(f"{where}: codec part {spec.name!r} missing")
        arr = to_numpy(parts[spec.name], spec)
        if tuple(arr.shape[1:]) != tuple(spec.shape):
            raise ShardError(
                f"{where}: part {spec.name!r} has shape {arr.shape}, expected (*, {spec.shape})"
            )
        if spec.kind == "segment":
            if arr.shape[0] != 1:
                raise ShardError(
                    f"{where}: segment part {spec.name!r} must have one row, has {arr.shape[0]}"
                )
        else:
            if frames is None:
                frames = arr.shape[0]
            elif arr.shape[0] != frames:
                raise ShardError(
                    f"{where}: part {spec.name!r} has {arr.shape[0]} frames, other parts {frames}"
                )
        out[spec.name] = arr
    return out, int(frames or 0)


@dataclass
class SegmentData:
    """One segment as read back: audio (int16 at 16 kHz) and decoded float32 features.

    ``features[teacher][layer]`` is ``(T, D)``; a teacher that did not cover this segment
    (skipped for its domain at extraction) is absent. For a crop, ``frame_start`` holds the
    first teacher frame of the crop per teacher and ``sample_start`` the first sample.
    """

    segment: Segment
    shard: str
    index: int
    audio: np.ndarray | None = None
    features: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    sample_start: int = 0
    frame_start: dict[str, int] = field(default_factory=dict)


class LayerDecoder:
    """``read_layer`` for both layouts' shard readers, on top of their ``read_parts``."""

    def read_layer(
        self,
        fname: str,
        layer: int,
        i: int,
        f0: int = 0,
        nf: int | None = None,
        state: dict | None = None,
    ) -> np.ndarray:
        """Decoded float32 frames ``f0:f0+nf`` of segment ``i``; a codec whose rows depend on
        earlier rows (time-delta) decodes the segment from its start."""
        codec = self.field(fname)["codec"]
        nf = self.num_frames(fname, i) - f0 if nf is None else nf
        if codec.row_independent:
            return codec.decode(self.read_parts(fname, layer, i, f0, f0 + nf), state)
        return codec.decode(self.read_parts(fname, layer, i), state)[f0 : f0 + nf]

    def read_layer_into(
        self, fname: str, layer: int, i: int, f0: int, state: dict | None, out: np.ndarray
    ) -> None:
        """``read_layer`` of ``len(out)`` frames from ``f0``, decoded straight into ``out`` (see
        ``Codec.decode_into`` for its dtypes)."""
        codec = self.field(fname)["codec"]
        nf = out.shape[0]
        if codec.row_independent:
            codec.decode_into(self.read_parts(fname, layer, i, f0, f0 + nf), state, out)
        else:
            np.copyto(
                out,
                codec.decode(self.read_parts(fname, layer, i), state)[f0 : f0 + nf],
                casting="same_kind",
            )
