"""The Zarr v3 layout: one group per shard, one subgroup per field.

    shards/NAME.zarr/                 group; attributes["audistill"] = {"shard", "segments": [...]}
      audio/samples   int16 (S,)      all segments' 16 kHz audio, concatenated
      audio/offsets   int64 (n+1,)    sample offsets: segment i is samples[offsets[i]:offsets[i+1]]
      FIELD/                          group; attributes["audistill"] = field spec (teacher, layers,
      codec, dim) offsets       int64 (n+1,)    frame offsets per segment (a segment the teacher
      skipped has 0 frames) present       uint8 (n,)      1 where the teacher covered the segment
        LNN/PART      (F, ...)        a codec's frame part, concatenated over segments
        LNN/PART      (n, ...)        a codec's segment part, one row per segment

Large arrays use Zarr's sharding codec (a few objects per array) with chunks of ~1 MiB, so a
sequential read streams and a crop or a single layer reads only its chunks. Every chunk ends in
a CRC32C, so flipped bytes are caught on read.

Writers encode each shard object themselves (:func:`encode_shard_object`: the v3 sharding codec's
layout, byte for byte what zarr-python writes - tested) and store it with one call: zarr's own
write path runs its asyncio machinery per 1 MiB chunk and held the GIL ~2 ms per chunk, most of
a shard writer's time next to the compression itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, ZstdCodec

from .errors import ShardError, StorageError
from .fields import AUDIO, FieldSpec, LayerDecoder, check_parts, layer_key
from .fs import BankFS, is_store_failure
from .layouts import FileEntries, file_entries, register_layout
from .lease import temp_tag
from .segments import Segment
from .zarr_chunks import ChunkReader

_CHUNK_BYTES = 1 << 20  # ~1 MiB: sequential passes stay cheap; a crop reads only its chunks
_CHUNKS_PER_SHARD = 32


def shard_dir(name: str) -> str:
    return f"shards/{name}.zarr"


def _read_store(fs: BankFS, rel: str):
    """A read-only store on a committed shard (writers stage through :class:`_StagedGroup`)."""
    if fs.is_local:
        fs.refuse_links_under(
            rel
        )  # zarr opens the files itself: no link may lead it out of the bank
        return zarr.storage.LocalStore(fs.path(rel), read_only=True)
    return zarr.storage.FsspecStore.from_url(
        fs.url_of(rel), storage_options=fs.open_options or None, read_only=True
    )


class _CheckedStore(zarr.storage.WrapperStore):
    """A store that checks every metadata document (``zarr.json``) it hands zarr against the
    sha256 in the shard's commit record. Chunks end in a CRC32C; metadata has none, and one
    changed byte in a fill value, a shape or a segment id keeps its size (a size check passes).
    The documents are read anyway, so the check costs no request."""

    def __init__(self, store, digests: dict[str, str], shard: str):
        super().__init__(store)
        self.digests, self.shard = digests, shard

    def _with_store(self, store):
        return type(self)(store, self.digests, self.shard)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if buf is not None and key.rsplit("/", 1)[-1] == "zarr.json":
            want = self.digests.get(key)
            if want is None or hashlib.sha256(buf.to_bytes()).hexdigest() != want:
                raise ShardError(
                    f"metadata {key} does not match its commit record (changed since the commit)",
                    shard=self.shard,
                )
        return buf


def zarr_compressors(cfg: dict) -> list:
    cid = cfg.get("id")
    if cid == "zstd":
        comp = ZstdCodec(level=int(cfg.get("level", 3)), checksum=False)
    elif cid == "blosc":
        shuffle = [BloscShuffle.noshuffle, BloscShuffle.shuffle, BloscShuffle.bitshuffle][
            int(cfg.get("shuffle", 1))
        ]
        comp = BloscCodec(
            typesize=int(cfg.get("typesize", 1)),
            cname=cfg.get("cname", "zstd"),
            clevel=int(cfg.get("clevel", 5)),
            shuffle=shuffle,
        )
    elif cid in (None, "none"):
        return [Crc32cCodec()]
    else:
        raise ShardError(f"no Zarr equivalent for compressor {cfg}")
    return [comp, Crc32cCodec()]


_EMPTY = np.uint64(2**64 - 1)  # the sharding index's "no chunk here"


def _crc32c(data) -> bytes:
    import google_crc32c

    return np.uint32(google_crc32c.value(data)).astype("<u4").tobytes()


def encode_shard_object(
    block: np.ndarray, chunk_rows: int, chunks: int, compressor
) -> np.ndarray | None:
    """One object of a Zarr v3 array sharded along rows, as uint8: ``block`` (at most ``chunk_rows *
    chunks`` rows; the array's last object may hold fewer) as inner chunks of ``chunk_rows`` rows,
    each ``bytes`` (little-endian, C order) -> ``compressor`` -> CRC32C, in order, then the index
    (offset, length per chunk: little-endian uint64, CRC32C) at the end. As zarr-python: a chunk
    that is all fill value (0) is not stored, the last one is zero-padded to full size, and an
    object with no chunk is not written (None). The pieces are assembled with numpy copies, which
    run without the GIL, not bytes concatenation, which holds it."""
    index = np.full((chunks, 2), _EMPTY, dtype="<u8")
    encoded: list[tuple[int, np.ndarray]] = []
    for k in range(-(-block.shape[0] // chunk_rows)):
        chunk = block[k * chunk_rows : (k + 1) * chunk_rows]
        if not chunk.any():
            continue
        if chunk.shape[0] < chunk_rows:
            chunk = np.concatenate(
                [chunk, np.zeros((chunk_rows - chunk.shape[0], *chunk.shape[1:]), chunk.dtype)]
            )
        raw = (
            np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<"))
            .view(np.uint8)
            .reshape(-1)
        )
        enc = raw if compressor is None else np.frombuffer(compressor.encode(raw), dtype=np.uint8)
        encoded.append((k, enc))
    if not encoded:
        return None
    out = np.empty(sum(e.size + 4 for _, e in encoded) + index.nbytes + 4, dtype=np.uint8)
    at = 0
    for k, enc in encoded:
        out[at : at + enc.size] = enc
        out[at + enc.size : at + enc.size + 4] = np.frombuffer(_crc32c(enc), dtype=np.uint8)
        index[k] = (at, enc.size + 4)
        at += enc.size + 4
    idx = index.view(np.uint8).reshape(-1)
    out[at : at + idx.size] = idx
    out[at + idx.size :] = np.frombuffer(_crc32c(idx), dtype=np.uint8)
    return out


class _Appender:
    """Appends rows to a 1-D or 2-D zarr array in whole shard-sized blocks (one object write each).
    ``put``: where the blocks go, ``put({store-relative path: bytes})``; the array's metadata goes
    to the group's store."""

    def __init__(
        self,
        group,
        name: str,
        dtype: str,
        trailing: tuple[int, ...],
        compressor: dict,
        put: Callable[[dict[str, bytes]], None],
    ):
        row_bytes = max(1, int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize)
        self.chunk_rows = int(min(1 << 20, max(64, _CHUNK_BYTES // row_bytes)))
        self.block_rows = self.chunk_rows * _CHUNKS_PER_SHARD
        self.array = group.create_array(
            name,
            shape=(0, *trailing),
            dtype=dtype,
            chunks=(self.chunk_rows, *trailing),
            shards=(self.block_rows, *trailing),
            compressors=zarr_compressors(compressor),
            fill_value=0,
            dimension_names=None,
        )
        # the numcodecs codec zarr_compressors configures (typesize explicit: chunks go in as bytes)
        self.compressor = (
            None if compressor.get("id") in (None, "none") else numcodecs.get_codec(compressor)
        )
        # {store-relative path: {"bytes", "sha256"}} of the objects this appender wrote, hashed
        # from memory so the commit need not read them back (on object storage: download them)
        self.files: dict[str, dict] = {}
        self.trailing = trailing
        self.dtype = np.dtype(dtype)
        self.put = put
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.written = 0

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[0]:
            self.buffer.append(rows)
            self.buffered += rows.shape[0]
        if self.buffered >= self.block_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buffered:
            return
        data = np.concatenate(self.buffer, axis=0) if len(self.buffer) > 1 else self.buffer[0]
        n = data.shape[0] if final else (data.shape[0] // self.block_rows) * self.block_rows
        if n:
            self.array.resize((self.written + n, *self.trailing))
            self._store_blocks(data[:n], self.written // self.block_rows)
            self.written += n
        rest = data[n:]
        self.buffer = [rest] if rest.shape[0] else []
        self.buffered = rest.shape[0]

    def _store_blocks(self, data: np.ndarray, first: int) -> None:
        """Rows ``data`` as shard objects ``first``, ``first + 1``, ... (every flush but the last
        writes whole objects, so each starts on an object boundary)."""
        sp = self.array.store_path
        objs = {}
        for k, lo in enumerate(range(0, data.shape[0], self.block_rows)):
            obj = encode_shard_object(
                data[lo : lo + self.block_rows], self.chunk_rows, _CHUNKS_PER_SHARD, self.compressor
            )
            if obj is not None:
                key = self.array.metadata.encode_chunk_key((first + k,) + (0,) * len(self.trailing))
                path = f"{sp.path}/{key}" if sp.path else key
                self.files[path] = {
                    "bytes": int(obj.size),
                    "sha256": hashlib.sha256(obj).hexdigest(),
                }
                objs[path] = obj.tobytes()
        if objs:
            self.put(objs)

    def close(self) -> None:
        self._flush(final=True)


def _small_array(group, name: str, data: np.ndarray) -> None:
    group.create_array(
        name,
        data=data,
        chunks=data.shape if data.size else (1,) * data.ndim,
        compressors=zarr_compressors({"id": "zstd", "level": 3}),
    )


class ZarrFieldWriter:
    """Writes one field group; segments arrive in shard order, ``None`` for a skipped one.
    ``put``: where the large data objects go (see :class:`_Appender`)."""

    def __init__(self, group, spec: FieldSpec, put: Callable[[dict[str, bytes]], None]):
        self.spec = spec
        self.group = group
        group.attrs["audistill"] = spec.attrs()
        self.offsets = [0]
        self.present: list[int] = []
        if spec.teacher is None:
            self.samples = _Appender(group, "samples", "int16", (), {"id": "zstd", "level": 3}, put)
            return
        self.specs = spec.part_specs()
        self.frame_parts: dict[tuple[int, str], _Appender] = {}
        self.segment_rows: dict[tuple[int, str], list[np.ndarray]] = {}
        for layer in spec.layers:
            lg = group.create_group(layer_key(layer))
            for ps in self.specs:
                if ps.kind == "frame":
                    self.frame_parts[(layer, ps.name)] = _Appender(
                        lg, ps.name, ps.dtype, ps.shape, ps.compressor, put
                    )
                else:
                    self.segment_rows[(layer, ps.name)] = []

    def add_audio(self, audio: np.ndarray) -> None:
        audio = np.ascontiguousarray(audio, dtype=np.int16).reshape(-1)
        self.samples.append(audio)
        self.offsets.append(self.offsets[-1] + audio.shape[0])
        self.present.append(1)

    def add_layers(self, layers: dict | None, where: str) -> None:
        """``layers``: {layer: parts} for every layer of the field, or None if not covered."""
        if layers is None:
            self.offsets.append(self.offsets[-1])
            self.present.append(0)
            for (_layer, pname), rows in self.segment_rows.items():
                ps = next(p for p in self.specs if p.name == pname)
                rows.append(np.zeros((1, *ps.shape), dtype=ps.dtype))
            return
        missing = [x for x in self.spec.layers if x not in layers]
        if missing:
            raise ShardError(f"{where}: teacher {self.spec.teacher!r} layers {missing} missing")
        frames = None
        for layer in self.spec.layers:
            parts, frames = check_parts(layers[layer], self.specs, frames, f"{where} layer {layer}")
            for ps in self.specs:
                if ps.kind == "frame":
                    self.frame_parts[(layer, ps.name)].append(parts[ps.name])
                else:
                    self.segment_rows[(layer, ps.name)].append(parts[ps.name])
        self.offsets.append(self.offsets[-1] + int(frames or 0))
        self.present.append(1)

    def appenders(self) -> list[_Appender]:
        return [self.samples] if self.spec.teacher is None else list(self.frame_parts.values())

    def close(self) -> tuple[int, int]:
        if self.spec.teacher is None:
            self.samples.close()
        else:
            for app in self.frame_parts.values():
                app.close()
            for (layer, pname), rows in self.segment_rows.items():
                ps = next(p for p in self.specs if p.name == pname)
                data = np.concatenate(rows) if rows else np.zeros((0, *ps.shape), dtype=ps.dtype)
                _small_array(self.group[layer_key(layer)], pname, data)
            _small_array(self.group, "present", np.asarray(self.present, dtype=np.uint8))
        _small_array(self.group, "offsets", np.asarray(self.offsets, dtype=np.int64))
        return sum(self.present), self.offsets[-1]


def _known_files(root: str, appenders: list[_Appender]) -> dict[str, dict]:
    return {f"{root}/{path}": e for a in appenders for path, e in a.files.items()}


class _StagedGroup:
    """A Zarr group written under ``tmp``: its metadata and small arrays are kept in memory and
    uploaded in one batch by :meth:`upload`; its large data objects go straight to ``tmp`` as
    they fill. Built through a store on an object store, every group, array, resize and attribute
    re-read and re-wrote metadata there - ~170 of a shard commit's ~260 requests."""

    def __init__(self, fs: BankFS, tmp: str):
        self.fs, self.tmp = fs, tmp
        # the in-memory store's contents: store-relative path -> zarr Buffer
        self.objects: dict = {}
        self.group = zarr.open_group(
            zarr.storage.MemoryStore(self.objects), mode="w", zarr_format=3
        )
        self.written: dict[
            str, int
        ] = {}  # bank-relative path -> bytes, of every file put under tmp

    def put(self, objs: dict[str, bytes]) -> None:
        staged = {f"{self.tmp}/{k}": v for k, v in objs.items()}
        self.fs.put_many(staged)
        self.written.update({rel: len(v) for rel, v in staged.items()})

    def upload(self) -> None:
        self.put({k: v.to_bytes() for k, v in self.objects.items()})


class ZarrShardWriter:
    """Writes a new shard into a temporary folder; :meth:`close` returns it for the commit."""

    def __init__(self, fs: BankFS, name: str, fields: list[FieldSpec]):
        self.fs, self.name = fs, name
        self.tmp = f"shards/.tmp-{name}-{temp_tag()}.zarr"
        self.final = shard_dir(name)
        self.staged = _StagedGroup(fs, self.tmp)
        self.root = self.staged.group
        self.writers = {
            f.name: ZarrFieldWriter(self.root.create_group(f.name), f, self.staged.put)
            for f in fields
        }
        self.segments: list[Segment] = []

    def add(
        self, segment: Segment, audio: np.ndarray | None, features: dict[str, dict | None]
    ) -> None:
        where = f"shard {self.name!r} segment {segment.id!r}"
        for fname, w in self.writers.items():
            if fname == AUDIO:
                w.add_audio(audio if audio is not None else np.zeros(0, np.int16))
            else:
                w.add_layers(features.get(w.spec.teacher), where)
        self.segments.append(segment)

    def close(self) -> dict[str, tuple[int, int]]:
        counts = {name: w.close() for name, w in self.writers.items()}
        self.root.attrs["audistill"] = {
            "shard": self.name,
            "segments": [s.to_json() for s in self.segments],
        }
        self.staged.upload()
        return counts

    def num_samples(self) -> int:
        """The audio samples stored (the audio field's last offset)."""
        return int(self.writers[AUDIO].offsets[-1])

    def layer_bytes(self) -> dict[str, dict[str, int]]:
        return {}  # from the file list: each layer is a folder (ZarrLayout.layer_bytes_from_files)

    def known_files(self) -> dict[str, dict]:
        """Final bank-relative path -> {"bytes", "sha256"} of the data objects written, hashed as
        they were written (the commit reads back only the small files)."""
        return _known_files(self.final, [a for w in self.writers.values() for a in w.appenders()])

    def commit(self) -> FileEntries:
        return _commit_folder(self.fs, self.staged, self.final, self.known_files(), self.name)

    def abort(self) -> None:
        self.fs.remove(self.tmp)


def _commit_folder(
    fs: BankFS, staged: _StagedGroup, final: str, known: FileEntries, shard: str
) -> FileEntries:
    """Check that every file written under the staged folder is there with the size written
    (another process may have deleted it: a commit of what is left would read back as zeros),
    hash those not ``known`` where they are, then move the folder to its final name; the final
    files with their sizes and sha256."""
    tmp = staged.tmp
    there = fs.sizes_under(tmp)
    lost = sorted(rel for rel, n in staged.written.items() if there.get(rel) != n)
    if lost:
        raise ShardError(
            f"{len(lost)} staged file(s) are gone or changed before the commit, e.g. {lost[0]} "
            "(removed by another process?); nothing committed",
            shard=shard,
        )
    files = file_entries(fs, {f.replace(tmp, final, 1): f for f in sorted(there)}, known)
    fs.move(tmp, final)
    return files


class ZarrFieldAdder:
    """Adds one teacher field to a committed shard, under a temporary name first."""

    def __init__(self, fs: BankFS, shard: str, spec: FieldSpec, num_segments: int):
        self.fs, self.shard, self.spec = fs, shard, spec
        self.tmp = f"{shard_dir(shard)}/.tmp-{spec.name}-{temp_tag()}"
        self.final = f"{shard_dir(shard)}/{spec.name}"
        self.staged = _StagedGroup(fs, self.tmp)
        self.writer = ZarrFieldWriter(self.staged.group, spec, self.staged.put)
        self.num_segments = num_segments

    def add(self, segment: Segment, layers: dict | None) -> None:
        self.writer.add_layers(layers, f"shard {self.shard!r} segment {segment.id!r}")

    def known_files(self) -> dict[str, dict]:
        """As :meth:`ZarrShardWriter.known_files`."""
        return _known_files(self.final, self.writer.appenders())

    def close(self) -> tuple[int, int]:
        if len(self.writer.present) != self.num_segments:
            raise ShardError(
                f"field {self.spec.name!r} got {len(self.writer.present)} segments, "
                f"shard has {self.num_segments}",
                shard=self.shard,
            )
        counts = self.writer.close()
        self.staged.upload()
        return counts

    def layer_bytes(self) -> None:
        return None  # from the file list, as ZarrShardWriter

    def commit(self) -> FileEntries:
        return _commit_folder(self.fs, self.staged, self.final, self.known_files(), self.shard)

    def abort(self) -> None:
        self.fs.remove(self.tmp)


class _RowWindow:
    """Reads rows of one array in whole chunks and keeps the chunks of the last read. A request
    that starts where the last one ended (a sequential pass) reads ``readahead`` chunks at once,
    so each chunk is decoded once; any other request (a random crop) reads only the chunks it
    touches, reusing those it shares with the last read (crops of neighbouring segments, read in
    shard order, share chunks) and decoding none it does not need. ``direct``: a
    :class:`ChunkReader` of the array (local banks), else chunks are read through zarr."""

    def __init__(
        self, array, readahead_chunks: int, direct: ChunkReader | None = None, where: str = ""
    ):
        self.array, self.direct = array, direct
        self.where = where  # the shard, for a store failure's message
        self.chunk = int(array.chunks[0]) if array.ndim else 1
        self.readahead = readahead_chunks
        self.k0 = 0
        self.cached: list[np.ndarray] = []  # decoded chunks k0, k0 + 1, ...
        self.end = -1  # the row after the last request

    def _read(self, k0: int, k1: int) -> list[np.ndarray]:
        if self.direct is not None:
            return self.direct.chunks(k0, k1)
        try:
            data = self.array[k0 * self.chunk : min(self.array.shape[0], k1 * self.chunk)]
        except Exception as e:
            if not is_store_failure(e):
                raise
            raise StorageError(
                f"reading {self.array.path} of shard {self.where!r} failed: {type(e).__name__}: {e}"
            ) from e
        return [data[i : i + self.chunk] for i in range(0, data.shape[0], self.chunk)]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        if hi <= lo:
            return np.zeros((0, *self.array.shape[1:]), dtype=self.array.dtype)
        k0, k1 = lo // self.chunk, -(-hi // self.chunk)
        held = self.k0 + len(self.cached)
        if not (self.k0 <= k0 and k1 <= held):
            sequential = lo == self.end
            stop = max(k1, k0 + self.readahead) if sequential else k1
            stop = min(stop, -(-self.array.shape[0] // self.chunk))
            r0, r1 = max(k0, self.k0), min(stop, held)  # chunks held already
            if r0 < r1:
                chunks = (
                    self._read(k0, r0)
                    + self.cached[r0 - self.k0 : r1 - self.k0]
                    + self._read(r1, stop)
                )
            else:
                chunks = self._read(k0, stop)
            self.k0, self.cached = k0, chunks
        self.end = hi
        parts = self.cached[k0 - self.k0 : k1 - self.k0]
        base = k0 * self.chunk
        if len(parts) == 1:
            return parts[0][lo - base : hi - base]
        last = hi - (k1 - 1) * self.chunk
        return np.concatenate([parts[0][lo - base :], *parts[1:-1], parts[-1][:last]])


class ZarrShardReader(LayerDecoder):
    """Reads one committed shard. All offsets are loaded at open; data is read on demand through
    per-array windows of ``readahead_chunks`` chunks (sequential reads decode each chunk once)."""

    def __init__(
        self, fs: BankFS, name: str, readahead_chunks: int = 8, files: FileEntries | None = None
    ):
        self.name = name
        self.readahead = readahead_chunks
        self.folder = (
            fs.path(shard_dir(name)) if fs.is_local else None
        )  # chunks read directly (ChunkReader)
        try:
            store = _read_store(fs, shard_dir(name))
            if (
                files is not None
            ):  # the commit record's file list: metadata is checked as it is read
                top = f"{shard_dir(name)}/"
                store = _CheckedStore(
                    store,
                    {
                        rel[len(top) :]: m["sha256"]
                        for rel, m in files.items()
                        if rel.startswith(top)
                    },
                    name,
                )
            self.root = zarr.open_group(store, mode="r", zarr_format=3)
            meta = self.root.attrs["audistill"]
            self.segments = [Segment.from_json(s) for s in meta["segments"]]
            self._fields: dict[str, dict] = {}
        except Exception as e:  # noqa: BLE001 - any failure to open is a broken shard
            raise ShardError(f"cannot open Zarr shard: {e}", shard=name) from e

    def field(self, fname: str) -> dict:
        f = self._fields.get(fname)
        if f is None:
            try:
                g = self.root[fname]
                spec = FieldSpec.from_attrs(g.attrs["audistill"])
                f = {"group": g, "spec": spec, "offsets": g["offsets"][:]}
                if spec.teacher is not None:
                    f["present"] = g["present"][:]
                    f["codec"] = spec.codec_obj()
                    f["parts"] = spec.part_specs()
                    f["arrays"] = {}
            except Exception as e:  # noqa: BLE001
                raise ShardError(f"cannot open field {fname!r}: {e}", shard=self.name) from e
            self._fields[fname] = f
        return f

    def read_audio(self, i: int, start: int = 0, num: int | None = None) -> np.ndarray:
        f = self.field(AUDIO)
        a, b = int(f["offsets"][i]), int(f["offsets"][i + 1])
        lo = a + start
        hi = b if num is None else min(b, lo + num)
        win = f.get("window")
        if win is None:
            arr = f["group"]["samples"]
            win = f["window"] = _RowWindow(
                arr, self.readahead, ChunkReader.for_array(arr, self.folder), self.name
            )
        return win.rows(lo, hi).copy()

    def covered(self, fname: str, i: int) -> bool:
        return bool(self.field(fname)["present"][i])

    def num_frames(self, fname: str, i: int) -> int:
        off = self.field(fname)["offsets"]
        return int(off[i + 1] - off[i])

    def read_parts(
        self, fname: str, layer: int, i: int, lo: int = 0, hi: int | None = None
    ) -> dict[str, np.ndarray]:
        """The stored codec parts of segment ``i`` (frame rows ``lo:hi`` of it), undecoded."""
        f = self.field(fname)
        a, b = int(f["offsets"][i]), int(f["offsets"][i + 1])
        hi = b - a if hi is None else hi
        parts = {}
        for ps in f["parts"]:
            win = f["arrays"].get((layer, ps.name))
            if win is None:
                arr = f["group"][layer_key(layer)][ps.name]
                win = f["arrays"][(layer, ps.name)] = _RowWindow(
                    arr,
                    self.readahead if ps.kind == "frame" else 1 << 30,
                    ChunkReader.for_array(arr, self.folder),
                    self.name,
                )
            parts[ps.name] = (
                win.rows(i, i + 1) if ps.kind == "segment" else win.rows(a + lo, a + hi)
            )
        return parts


class ZarrLayout:
    """The Zarr v3 layout: a shard is the folder ``shards/SHARD.zarr``."""

    name = "zarr"

    def writer(self, fs: BankFS, shard: str, fields: list[FieldSpec]) -> ZarrShardWriter:
        return ZarrShardWriter(fs, shard, fields)

    def field_adder(
        self, fs: BankFS, shard: str, spec: FieldSpec, num_segments: int
    ) -> ZarrFieldAdder:
        return ZarrFieldAdder(fs, shard, spec, num_segments)

    def reader(
        self, fs: BankFS, shard: str, field_names: list[str], files: FileEntries | None = None
    ) -> ZarrShardReader:
        return ZarrShardReader(fs, shard, files=files)

    def listed_sizes(self, fs: BankFS, shard: str) -> dict[str, int]:
        return fs.sizes_under(shard_dir(shard))  # one listing of the shard's folder (~50 files)

    def remove_uncommitted(self, fs: BankFS, shard: str, fields: list[FieldSpec]) -> None:
        fs.remove(shard_dir(shard))

    def field_of_file(self, shard: str, rel: str) -> str | None:
        parts = rel.split("/")
        if len(parts) > 3 and parts[1] == f"{shard}.zarr":
            return parts[2]
        return None  # the shard group's own metadata

    def layer_bytes_from_files(
        self, shard: str, field: str, layers: list[int], files: FileEntries
    ) -> dict[str, int]:
        out = {}
        for layer in layers:
            prefix = f"{shard_dir(shard)}/{field}/{layer_key(layer)}/"
            out[str(layer)] = sum(int(m["bytes"]) for p, m in files.items() if p.startswith(prefix))
        return out

    def layer_bytes_stored(
        self, fs: BankFS, shard: str, field: str, layers: list[int]
    ) -> dict[str, int]:
        sizes = fs.sizes_under(f"{shard_dir(shard)}/{field}")
        return self.layer_bytes_from_files(
            shard, field, layers, {p: {"bytes": n} for p, n in sizes.items()}
        )

    def in_shard_container(self, shard: str, rel: str) -> bool:
        return rel.startswith(f"{shard_dir(shard)}/")


register_layout(ZarrLayout())
