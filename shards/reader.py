"""Reading a bank: sequential per shard, random access by segment id, crops, chosen layers only."""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

from .bank import Bank, CheckMode
from .codecs import codec_from_record
from .errors import BankError, MissingDataError, ShardError
from .fields import SegmentData
from .segments import Segment

log = logging.getLogger(__name__)

TeacherRequest = dict[str, list[int] | None] | Iterable[str] | None


class BankReader:
    """Reads segments of a bank with only the requested teachers and layers decoded.

    ``teachers``: ``{name: [layers]}`` (``None`` = every kept layer), a list of names, or
    ``None`` for every teacher. ``on_error``: ``"raise"`` raises :class:`ShardError` naming the
    shard and segment; ``"skip"`` logs it, records it in ``self.errors`` and goes on.
    """

    def __init__(
        self,
        bank: Bank | str,
        teachers: TeacherRequest = None,
        *,
        audio: bool = True,
        shards: list[str] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        check: CheckMode = "size",
        storage_options: dict | None = None,
        max_open_shards: int = 64,
    ):
        self.bank = bank if isinstance(bank, Bank) else Bank.open(bank, storage_options)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.on_error, self.check, self.audio = on_error, check, audio
        cat = self.bank.catalog
        self.shards = sorted(cat.shards) if shards is None else list(shards)
        for s in self.shards:
            self.bank.shard_record(s)
        self.teachers = self._resolve(teachers)
        self.errors: list[ShardError] = []
        self._states: dict[tuple[str, int], dict | None] = {}
        # the shards open at once, least recently used closed first: a reader holds read-ahead
        # windows (Zarr) or open files (WebDataset), and a long-lived reader of a 100 000-shard
        # bank (locate() alone opens every shard) ran out of memory or file descriptors
        self._readers: OrderedDict[str, object] = OrderedDict()
        self.max_open_shards = max(1, int(max_open_shards))
        self._index: dict[str, tuple[str, int]] | None = None

    def _resolve(self, request: TeacherRequest) -> dict[str, list[int]]:
        cat = self.bank.catalog
        if request is None:
            request = {t: None for t in cat.teachers}
        elif not isinstance(request, dict):
            request = {t: None for t in request}
        out, problems = {}, []
        for name, layers in request.items():
            if name not in cat.teachers:
                problems.append(f"teacher {name!r} (the bank has {sorted(cat.teachers) or 'none'})")
                continue
            rec = cat.teachers[name]
            want = sorted(rec.layers if layers is None else {int(x) for x in layers})
            missing = [x for x in want if x not in rec.layers]
            if missing:
                problems.append(f"teacher {name!r} layers {missing} (kept: {rec.layers})")
            for s in self.shards:
                lacking = [x for x in want if x not in cat.shards[s].layers_of(name)]
                if lacking and not missing:
                    problems.append(f"teacher {name!r} layers {lacking} in shard {s!r}")
                    break
            out[name] = want
        if problems:
            raise MissingDataError(f"bank {self.bank.root} lacks: " + "; ".join(problems))
        return out

    # -- shards ---------------------------------------------------------------------------------
    def reader(self, shard: str):
        r = self._readers.get(shard)
        if r is not None:
            self._readers.move_to_end(shard)
            return r
        r = self._readers[shard] = self.bank.shard_reader(shard, check=self.check)
        while len(self._readers) > self.max_open_shards:
            _, old = self._readers.popitem(last=False)
            if hasattr(old, "close"):
                old.close()
        return r

    def segments(self, shard: str) -> list[Segment]:
        return self.reader(shard).segments

    def state(self, teacher: str, layer: int) -> dict | None:
        key = (teacher, layer)
        if key not in self._states:
            self._states[key] = self.bank.load_codec_state(teacher, layer)
        return self._states[key]

    def _field_of(self, shard: str) -> dict[tuple[str, int], str]:
        rec = self.bank.catalog.shards[shard]
        return {
            (f.teacher, lay): f.name for f in rec.fields.values() if f.teacher for lay in f.layers
        }

    def read(self, shard: str, i: int, crop: tuple[int, int] | None = None) -> SegmentData:
        """Segment ``i`` of ``shard``; ``crop=(start_sample, num_samples)`` reads only that stretch
        and the teacher frames that cover it (frame ``round(start / hop)`` onwards)."""
        r = self.reader(shard)
        seg = r.segments[i]
        with self._naming(shard, seg):
            return self._read(r, shard, i, seg, crop)

    @contextlib.contextmanager
    def _naming(self, shard: str, seg: Segment):
        """Any failure inside is a ShardError naming the shard and the segment."""
        try:
            yield
        except ShardError as e:
            if e.segment is None:
                raise ShardError(e.message, shard=e.shard or shard, segment=seg.id) from e
            raise
        except BankError:
            raise
        except Exception as e:  # noqa: BLE001 - a decode failure is a broken shard
            raise ShardError(
                f"cannot read segment: {type(e).__name__}: {e}", shard=shard, segment=seg.id
            ) from e

    def _frames(self, r, fname: str, i: int, crop, teacher: str) -> tuple[int, int]:
        """(first frame, frames) of field ``fname`` covering ``crop`` of segment ``i`` (all when
        None)."""
        start, num = (0, None) if crop is None else (int(crop[0]), int(crop[1]))
        hop = self.bank.catalog.teachers[teacher].hop
        total = r.num_frames(fname, i)
        f0 = min(total, int(round(start / hop)))
        return f0, (total - f0 if num is None else max(0, min(int(round(num / hop)), total - f0)))

    def _read(self, r, shard: str, i: int, seg: Segment, crop) -> SegmentData:
        start, num = (0, None) if crop is None else (int(crop[0]), int(crop[1]))
        out = SegmentData(segment=seg, shard=shard, index=i, sample_start=start)
        if self.audio:
            out.audio = r.read_audio(i, start, num)
        fields = self._field_of(shard)
        for teacher, layers in self.teachers.items():
            feats = {}
            for layer in layers:
                fname = fields[(teacher, layer)]
                if not r.covered(fname, i):
                    break
                f0, nf = self._frames(r, fname, i, crop, teacher)
                feats[layer] = r.read_layer(fname, layer, i, f0, nf, self.state(teacher, layer))
                out.frame_start[teacher] = f0
            if len(feats) == len(layers):
                out.features[teacher] = feats
        return out

    # -- crops into caller's buffers (a training loader's batches)
    # ----------------------------------
    def decoded_dtype(self, teacher: str) -> str:
        """The narrowest dtype holding ``teacher``'s decoded values exactly
        (``Codec.decoded_dtype``)."""
        return codec_from_record(self.bank.catalog.teachers[teacher].codec).decoded_dtype

    def read_audio(self, shard: str, i: int, crop: tuple[int, int] | None = None) -> np.ndarray:
        """The int16 audio of segment ``i`` (``crop``: that stretch), as ``read`` gives it."""
        r = self.reader(shard)
        with self._naming(shard, r.segments[i]):
            return (
                r.read_audio(i, 0, None)
                if crop is None
                else r.read_audio(i, int(crop[0]), int(crop[1]))
            )

    def frame_window(
        self, shard: str, i: int, teacher: str, crop: tuple[int, int] | None = None
    ) -> tuple[int, int] | None:
        """(first frame, frames) of ``teacher``'s first requested layer covering ``crop`` of segment
        ``i``, as ``read`` crops them; None where the teacher skipped the segment."""
        r = self.reader(shard)
        with self._naming(shard, r.segments[i]):
            fields = self._field_of(shard)
            names = [fields[(teacher, layer)] for layer in self.teachers[teacher]]
            if not all(r.covered(f, i) for f in names):
                return None
            return self._frames(r, names[0], i, crop, teacher)

    def read_layer_into(
        self,
        shard: str,
        i: int,
        teacher: str,
        layer: int,
        crop: tuple[int, int] | None,
        out: np.ndarray,
    ) -> int:
        """``read``'s frames of ``teacher``'s ``layer`` decoded into ``out[:n]`` (float32, or the
        codec's ``decoded_dtype`` - bfloat16 as uint16 bits); returns n."""
        r = self.reader(shard)
        with self._naming(shard, r.segments[i]):
            fname = self._field_of(shard)[(teacher, layer)]
            f0, nf = self._frames(r, fname, i, crop, teacher)
            r.read_layer_into(fname, layer, i, f0, self.state(teacher, layer), out[:nf])
            return nf

    def iter_shard(self, shard: str) -> Iterator[SegmentData]:
        try:
            n = len(self.segments(shard))
        except ShardError as e:
            if self.on_error == "raise":
                raise
            self._skip(e)
            return
        for i in range(n):
            try:
                yield self.read(shard, i)
            except ShardError as e:
                if self.on_error == "raise":
                    raise
                self._skip(e)

    def _skip(self, e: ShardError) -> None:
        log.warning("skipping: %s", e)
        self.errors.append(e)

    def __iter__(self) -> Iterator[SegmentData]:
        for s in self.shards:
            yield from self.iter_shard(s)

    # -- random access
    # ------------------------------------------------------------------------------
    def locate(self, segment_id: str) -> tuple[str, int]:
        if self._index is None:
            self._index = {}
            for s in self.shards:
                for i, seg in enumerate(self.segments(s)):
                    self._index[seg.id] = (s, i)
        try:
            return self._index[segment_id]
        except KeyError:
            raise MissingDataError(f"bank {self.bank.root} has no segment {segment_id!r}") from None

    def get(self, segment_id: str, crop: tuple[int, int] | None = None) -> SegmentData:
        shard, i = self.locate(segment_id)
        return self.read(shard, i, crop)

    def release(self, shard: str) -> None:
        """Close one shard's reader (its read-ahead windows); it reopens on the next read."""
        r = self._readers.pop(shard, None)
        if r is not None and hasattr(r, "close"):
            r.close()

    def close(self) -> None:
        for r in self._readers.values():
            if hasattr(r, "close"):
                r.close()
        self._readers.clear()


def crop_hop(hops: Iterable[float]) -> int:
    """The least common multiple of the teachers' hops in samples: crops starting at a multiple
    of it start on a frame boundary of every teacher."""
    out = 1
    for h in hops:
        hi = int(round(h))
        if abs(h - hi) > 1e-6:
            raise MissingDataError(
                f"hop {h} samples is not whole; resample that teacher's frames instead"
            )
        out = out * hi // math.gcd(out, hi)
    return out


def spread_order(n: int) -> list[int]:
    """0..n-1 ordered by their bit-reversed value: each prefix is spread over the whole range."""
    bits = max(1, (n - 1).bit_length())
    return sorted(range(n), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
