"""The WebDataset layout: one tar per field per shard, all sharing sample keys.

    shards/NAME.audio.tar        KEY.audio.npy (int16 16 kHz, plain .npy), KEY.json (the segment)
    shards/NAME.FIELD.tar        KEY.LNN.PART.bin: one codec part of one layer, raw C-order bytes
                                 compressed by the part's numcodecs compressor
    shards/NAME.FIELD.json       the field's index: spec (teacher, layers, codec, dim), the part
                                 specs, and per segment its key, frames and, per member, the
                                 offset, size and CRC32 of the member's data in the tar

Keys are the segment ids (no dots, no separators), so `webdataset.WebDataset` groups each tar
into samples. A segment a teacher skipped has no sample in that teacher's tar. A teacher added
later is a new tar (+ index); nothing existing is rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import zlib

import numcodecs
import numpy as np

from .errors import BankError, ShardError
from .fields import AUDIO, FieldSpec, LayerDecoder, check_parts, layer_key
from .fs import BankFS
from .layouts import FileEntries, file_entries, register_layout
from .lease import temp_tag
from .segments import Segment

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


def tar_path(shard: str, fname: str) -> str:
    return f"shards/{shard}.{fname}.tar"


def index_path(shard: str, fname: str) -> str:
    return f"shards/{shard}.{fname}.json"


def index_layer_bytes(entries: list[dict], layers: list[int]) -> dict[str, int]:
    """Stored bytes per layer ({"LAYER": n}) of a field index's segment entries: the compressed
    parts, without tar headers."""
    out = {str(layer): 0 for layer in layers}
    for e in entries:
        for member, m in (e["members"] or {}).items():
            layer = str(int(member.split(".")[0][1:]))
            out[layer] = out.get(layer, 0) + int(m["size"])
    return out


def compress(arr: np.ndarray, cfg: dict) -> bytes:
    if arr.size == 0:
        return b""
    if cfg.get("id") in (None, "none"):
        return arr.tobytes()
    conf = {k: v for k, v in cfg.items() if k != "typesize"}
    return bytes(numcodecs.get_codec(conf).encode(np.ascontiguousarray(arr)))


def decompress(data: bytes, cfg: dict, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=np.dtype(dtype))
    if cfg.get("id") not in (None, "none"):
        conf = {k: v for k, v in cfg.items() if k != "typesize"}
        data = numcodecs.get_codec(conf).decode(data)
    arr = np.frombuffer(data, dtype=np.dtype(dtype))
    return arr.reshape(shape)


class _TarWriter:
    """A streaming tar writer that records where each member's data starts."""

    def __init__(self, fileobj):
        self.tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.GNU_FORMAT)

    def add(self, name: str, data: bytes) -> dict:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o444
        header = len(info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors))
        offset = self.tar.offset + header
        self.tar.addfile(info, io.BytesIO(data))
        return {"offset": offset, "size": len(data), "crc32": zlib.crc32(data)}

    def close(self) -> None:
        self.tar.close()


class _HashingWriter:
    """A write-only file that hashes what goes through it (the commit records the tar's size and
    sha256 without reading it back - from object storage, a second download)."""

    def __init__(self, file):
        self.file, self.sha = file, hashlib.sha256()
        self.bytes = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()


class WdsFieldWriter:
    """Streams one field's tar to ``tmp_tar`` and keeps its index in memory (small)."""

    def __init__(self, fs: BankFS, shard: str, spec: FieldSpec):
        self.fs, self.shard, self.spec = fs, shard, spec
        tag = temp_tag()
        self.tmp_tar = f"shards/.tmp-{shard}.{spec.name}.{tag}.tar"
        self.tmp_index = f"shards/.tmp-{shard}.{spec.name}.{tag}.json"
        self.file = _HashingWriter(fs.open(self.tmp_tar, "wb"))
        self.tar = _TarWriter(self.file)
        self.specs = [] if spec.teacher is None else spec.part_specs()
        self.entries: list[dict] = []
        self.covered = 0
        self.frames = 0

    def add_audio(self, segment: Segment, audio: np.ndarray) -> None:
        audio = np.ascontiguousarray(audio, dtype=np.int16).reshape(-1)
        buf = io.BytesIO()
        np.save(buf, audio, allow_pickle=False)
        members = {
            "audio.npy": self.tar.add(f"{segment.id}.audio.npy", buf.getvalue()),
            "json": self.tar.add(f"{segment.id}.json", json.dumps(segment.to_json()).encode()),
        }
        self.entries.append({"key": segment.id, "samples": int(audio.shape[0]), "members": members})
        self.covered += 1

    def add_layers(self, segment: Segment, layers: dict | None) -> None:
        if layers is None:
            self.entries.append({"key": segment.id, "frames": 0, "members": None})
            return
        where = f"shard {self.shard!r} segment {segment.id!r}"
        missing = [x for x in self.spec.layers if x not in layers]
        if missing:
            raise ShardError(f"{where}: teacher {self.spec.teacher!r} layers {missing} missing")
        frames = None
        members = {}
        for layer in self.spec.layers:
            parts, frames = check_parts(layers[layer], self.specs, frames, f"{where} layer {layer}")
            for ps in self.specs:
                m = f"{layer_key(layer)}.{ps.name}.bin"
                members[m] = self.tar.add(
                    f"{segment.id}.{m}", compress(parts[ps.name], ps.compressor)
                )
        self.entries.append({"key": segment.id, "frames": int(frames or 0), "members": members})
        self.covered += 1
        self.frames += int(frames or 0)

    def close(self) -> tuple[int, int]:
        self.tar.close()
        self.file.close()
        index = {
            "format_version": FORMAT_VERSION,
            "shard": self.shard,
            "field": self.spec.attrs(),
            "parts": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "dtype": p.dtype,
                    "shape": list(p.shape),
                    "compressor": p.compressor,
                }
                for p in self.specs
            ],
            "segments": self.entries,
        }
        self.fs.write_bytes_atomic(self.tmp_index, json.dumps(index).encode())
        return self.covered, self.frames

    def move(self) -> list[str]:
        """Move tar and index to their final names: the tar first, the index last."""
        final_tar, final_index = (
            tar_path(self.shard, self.spec.name),
            index_path(self.shard, self.spec.name),
        )
        try:
            if self.fs.is_local and os.path.getsize(self.fs.path(self.tmp_tar)) != self.file.bytes:
                raise ShardError(
                    f"staged file {self.tmp_tar} is not the {self.file.bytes} bytes written "
                    "(changed "
                    "by another process?); nothing committed",
                    shard=self.shard,
                )
            self.fs.move_file(self.tmp_tar, final_tar)
            self.fs.move_file(self.tmp_index, final_index)
        except FileNotFoundError as e:
            raise ShardError(
                f"a staged file is gone before the commit ({e}; removed by another process?)",
                shard=self.shard,
            ) from e
        return [final_tar, final_index]

    def layer_bytes(self) -> dict[str, int]:
        """Stored bytes per layer ({"LAYER": n}): the compressed parts, without tar headers."""
        return index_layer_bytes(self.entries, self.spec.layers)

    def known_files(self) -> dict[str, dict]:
        """{final tar path: {"bytes", "sha256"}}, hashed as it was written (after :meth:`close`)."""
        return {
            tar_path(self.shard, self.spec.name): {
                "bytes": self.file.bytes,
                "sha256": self.file.sha.hexdigest(),
            }
        }

    def abort(self) -> None:
        for close in (self.tar.close, self.file.close):
            try:
                close()
            except Exception as e:  # noqa: BLE001 - the write already failed; removal matters
                log.debug("closing %s after a failed write: %s", self.tmp_tar, e)
        self.fs.remove(self.tmp_tar)
        self.fs.remove(self.tmp_index)


class WdsShardWriter:
    def __init__(self, fs: BankFS, name: str, fields: list[FieldSpec]):
        self.fs, self.name = fs, name
        self.writers = {f.name: WdsFieldWriter(fs, name, f) for f in fields}
        self.segments: list[Segment] = []

    def add(
        self, segment: Segment, audio: np.ndarray | None, features: dict[str, dict | None]
    ) -> None:
        for fname, w in self.writers.items():
            if fname == AUDIO:
                w.add_audio(segment, audio if audio is not None else np.zeros(0, np.int16))
            else:
                w.add_layers(segment, features.get(w.spec.teacher))
        self.segments.append(segment)

    def close(self) -> dict[str, tuple[int, int]]:
        return {name: w.close() for name, w in self.writers.items()}

    def num_samples(self) -> int:
        """The segments' sample counts (Segment.num_samples), summed."""
        return sum(s.num_samples for s in self.segments)

    def commit(self) -> FileEntries:
        files: list[str] = []
        for w in self.writers.values():
            files += w.move()
        return file_entries(self.fs, {f: f for f in files}, self.known_files())

    def known_files(self) -> dict[str, dict]:
        return {k: v for w in self.writers.values() for k, v in w.known_files().items()}

    def layer_bytes(self) -> dict[str, dict[str, int]]:
        return {
            name: w.layer_bytes() for name, w in self.writers.items() if w.spec.teacher is not None
        }

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


class WdsFieldAdder:
    def __init__(self, fs: BankFS, shard: str, spec: FieldSpec, num_segments: int):
        self.writer = WdsFieldWriter(fs, shard, spec)
        self.num_segments = num_segments
        self.shard = shard

    def add(self, segment: Segment, layers: dict | None) -> None:
        self.writer.add_layers(segment, layers)

    def close(self) -> tuple[int, int]:
        if len(self.writer.entries) != self.num_segments:
            raise ShardError(
                f"field {self.writer.spec.name!r} got {len(self.writer.entries)} segments, "
                f"shard has {self.num_segments}",
                shard=self.shard,
            )
        return self.writer.close()

    def commit(self) -> FileEntries:
        w = self.writer
        return file_entries(w.fs, {f: f for f in w.move()}, w.known_files())

    def layer_bytes(self) -> dict[str, int]:
        return self.writer.layer_bytes()

    def abort(self) -> None:
        self.writer.abort()


class WdsShardReader(LayerDecoder):
    """Reads a committed WebDataset shard through its field indexes (ranged reads)."""

    def __init__(
        self, fs: BankFS, name: str, field_names: list[str], files: FileEntries | None = None
    ):
        self.fs, self.name = fs, name
        self.files = (
            files  # the commit record's file list: each index read is checked against its sha256
        )
        self._fields: dict[str, dict] = {}
        self._files: dict[str, object] = {}
        audio = self.field(AUDIO) if AUDIO in field_names else None
        if audio is None:
            raise ShardError("WebDataset shard has no audio field", shard=name)
        self.segments = []
        for e in audio["index"]["segments"]:
            self.segments.append(
                Segment.from_json(json.loads(self._member(AUDIO, e["key"], e["members"]["json"])))
            )

    def field(self, fname: str) -> dict:
        f = self._fields.get(fname)
        if f is None:
            rel = index_path(self.name, fname)
            data = self.fs.read_bytes(rel)
            if self.files is not None and hashlib.sha256(data).hexdigest() != self.files.get(
                rel, {}
            ).get("sha256"):
                # members carry CRCs; the index (offsets, segment keys, the field spec) has only
                # this
                raise ShardError(
                    f"index {rel} does not match its commit record (changed since the commit)",
                    shard=self.name,
                )
            try:
                index = json.loads(data)
                spec = FieldSpec.from_attrs(index["field"])
            except Exception as e:  # noqa: BLE001
                raise ShardError(
                    f"cannot read the index of field {fname!r}: {e}", shard=self.name
                ) from e
            f = {"index": index, "spec": spec}
            if spec.teacher is not None:
                try:
                    f["codec"] = spec.codec_obj()
                    f["parts"] = spec.part_specs()
                except BankError as e:  # a codec (version) this audistill cannot decode
                    raise ShardError(f"cannot open field {fname!r}: {e}", shard=self.name) from e
            self._fields[fname] = f
        return f

    def _member(self, fname: str, key: str, m: dict) -> bytes:
        fh = self._files.get(fname)
        if fh is None:
            fh = self._files[fname] = self.fs.open(tar_path(self.name, fname), "rb")
        fh.seek(m["offset"])
        data = fh.read(m["size"])
        if len(data) != m["size"] or zlib.crc32(data) != m["crc32"]:
            raise ShardError(
                f"member of field {fname!r} is truncated or corrupted", shard=self.name, segment=key
            )
        return data

    def read_audio(self, i: int, start: int = 0, num: int | None = None) -> np.ndarray:
        e = self.field(AUDIO)["index"]["segments"][i]
        arr = np.load(
            io.BytesIO(self._member(AUDIO, e["key"], e["members"]["audio.npy"])), allow_pickle=False
        )
        return arr[start:] if num is None else arr[start : start + num]

    def covered(self, fname: str, i: int) -> bool:
        return self.field(fname)["index"]["segments"][i]["members"] is not None

    def num_frames(self, fname: str, i: int) -> int:
        return int(self.field(fname)["index"]["segments"][i]["frames"])

    def read_parts(
        self, fname: str, layer: int, i: int, lo: int = 0, hi: int | None = None
    ) -> dict[str, np.ndarray]:
        """The stored codec parts of segment ``i`` (frame rows ``lo:hi`` of it), undecoded."""
        f = self.field(fname)
        e = f["index"]["segments"][i]
        frames = int(e["frames"])
        hi = frames if hi is None else hi
        parts = {}
        for ps in f["parts"]:
            if e["members"] is None:
                raise ShardError(
                    f"field {fname!r} does not cover this segment",
                    shard=self.name,
                    segment=e["key"],
                )
            data = self._member(fname, e["key"], e["members"][f"{layer_key(layer)}.{ps.name}.bin"])
            rows = 1 if ps.kind == "segment" else frames
            arr = decompress(data, ps.compressor, ps.dtype, (rows, *ps.shape))
            parts[ps.name] = arr if ps.kind == "segment" else arr[lo:hi]
        return parts

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


class WdsLayout:
    """The WebDataset layout: a shard is the tars ``shards/SHARD.FIELD.tar`` and their indexes."""

    name = "webdataset"

    def writer(self, fs: BankFS, shard: str, fields: list[FieldSpec]) -> WdsShardWriter:
        return WdsShardWriter(fs, shard, fields)

    def field_adder(
        self, fs: BankFS, shard: str, spec: FieldSpec, num_segments: int
    ) -> WdsFieldAdder:
        return WdsFieldAdder(fs, shard, spec, num_segments)

    def reader(
        self, fs: BankFS, shard: str, field_names: list[str], files: FileEntries | None = None
    ) -> WdsShardReader:
        return WdsShardReader(fs, shard, field_names, files)

    def listed_sizes(self, fs: BankFS, shard: str) -> dict[str, int]:
        return (
            fs.sizes_named("shards", f"{shard}.") or {}
        )  # one listing of the name prefix (object stores)

    def remove_uncommitted(self, fs: BankFS, shard: str, fields: list[FieldSpec]) -> None:
        # not a listing of shards/ - 100 000 shards' files, once per shard written: on an object
        # store a listing of this shard's name prefix; locally the files this write would make
        # (a crashed writer's others are stray files `shards verify` reports)
        listed = fs.sizes_named("shards", f"{shard}.")
        rels = (
            list(listed)
            if listed is not None
            else [p for f in fields for p in (tar_path(shard, f.name), index_path(shard, f.name))]
        )
        for rel in rels:
            if rel.endswith(".tar") or rel.endswith(".json"):
                fs.remove(rel)

    def field_of_file(self, shard: str, rel: str) -> str | None:
        base = rel.split("/")[-1]
        if base.startswith(f"{shard}.") and (base.endswith(".tar") or base.endswith(".json")):
            return base[len(shard) + 1 : base.rindex(".")]
        return None

    def layer_bytes_from_files(
        self, shard: str, field: str, layers: list[int], files: FileEntries
    ) -> None:
        return None  # a tar holds every layer: the field's index tells (layer_bytes_stored)

    def layer_bytes_stored(
        self, fs: BankFS, shard: str, field: str, layers: list[int]
    ) -> dict[str, int]:
        index = json.loads(fs.read_bytes(index_path(shard, field)))
        return index_layer_bytes(index["segments"], layers)

    def in_shard_container(self, shard: str, rel: str) -> bool:
        return False  # a shard's files lie beside other shards' in shards/


register_layout(WdsLayout())
