"""Whole inner chunks of a committed, row-sharded Zarr v3 array, read straight from local files.

The layout's large arrays (audio samples, codec frame parts) are stored with Zarr's sharding
codec: each object holds a fixed number of inner chunks (``bytes`` -> optional blosc/zstd ->
``crc32c``) and ends in an index of (offset, length) pairs with its own CRC32C. zarr-python reads
such an array through its asyncio machinery, one event-loop round trip per request; a training
loader asks for hundreds of small crops per batch, and that machinery cost several times the
decode itself. :class:`ChunkReader` reads the same bytes with one ``pread`` per chunk, checks the
same CRCs and decodes with the same numcodecs codecs. Arrays stored any other way (and banks on
object stores) keep going through zarr: :meth:`ChunkReader.for_array` returns None for them.

Reading never follows a link out of the shard's folder.
"""

from __future__ import annotations

import os

import numcodecs
import numpy as np

from .errors import ShardError

_EMPTY = 2**64 - 1  # the sharding index's "no chunk here"
_DECODERS = {"blosc": numcodecs.Blosc, "zstd": numcodecs.Zstd}


_RESIDUE = 0x48674BC7  # CRC32C of any bytes followed by their own CRC32C (little-endian)


def _intact(data: bytes) -> bool:
    """True when ``data`` ends in the CRC32C of what precedes it (checked without a copy)."""
    import google_crc32c

    return len(data) >= 4 and int(google_crc32c.value(data)) == _RESIDUE


def _plain_pipeline(meta: dict) -> tuple[int, int, str | None] | None:
    """(rows per object, rows per inner chunk, compressor id) when ``meta`` (an array's
    ``zarr.json``) is the row-sharded pipeline this module reads; else None."""
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return None
    conf = codecs[0].get("configuration", {})
    shape, outer = list(meta["shape"]), list(meta["chunk_grid"]["configuration"]["chunk_shape"])
    inner = list(conf.get("chunk_shape", []))
    if not shape or outer[1:] != shape[1:] or inner[1:] != shape[1:] or outer[0] % inner[0]:
        return None
    if conf.get("index_location", "end") != "end" or meta.get("fill_value") not in (0, 0.0):
        return None
    names = [c.get("name") for c in conf.get("codecs", [])]
    index_names = [c.get("name") for c in conf.get("index_codecs", [])]
    if (
        index_names != ["bytes", "crc32c"]
        or not names
        or names[0] != "bytes"
        or names[-1] != "crc32c"
    ):
        return None
    for c in list(conf["codecs"][:1]) + list(conf["index_codecs"][:1]):
        if c.get("configuration", {}).get("endian", "little") != "little":
            return None
    middle = names[1:-1]
    if len(middle) > 1 or (middle and middle[0] not in _DECODERS):
        return None
    return int(outer[0]), int(inner[0]), (middle[0] if middle else None)


class ChunkReader:
    """Decoded inner chunks of one array (see the module docstring). ``folder``: the local folder
    of the store the array was opened from (its ``array.path`` is relative to it)."""

    def __init__(
        self, array, folder: str, object_rows: int, chunk_rows: int, compressor: str | None
    ):
        self.array = array
        self.folder = os.path.realpath(folder)
        self.dir = os.path.join(self.folder, array.path)
        self.shape = tuple(int(x) for x in array.shape)
        self.dtype = np.dtype(str(array.metadata.to_dict()["data_type"])).newbyteorder("<")
        self.chunk_rows, self.per_object = chunk_rows, object_rows // chunk_rows
        self.decoder = _DECODERS[compressor]() if compressor else None
        self._index: dict[int, np.ndarray | None] = {}
        self._paths: dict[int, str] = {}  # objects whose path was checked (inside the folder)

    @classmethod
    def for_array(cls, array, folder: str | None) -> ChunkReader | None:
        if folder is None:
            return None
        plain = _plain_pipeline(array.metadata.to_dict())
        return None if plain is None else cls(array, folder, *plain)

    @property
    def num_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_rows)

    def _object_path(self, obj: int) -> str:
        key = self.array.metadata.encode_chunk_key((obj,) + (0,) * (len(self.shape) - 1))
        return os.path.join(self.dir, *key.split("/"))

    def _open(self, obj: int) -> int | None:
        """A descriptor of object ``obj`` (None: never written, every chunk is fill); a link that
        leads out of the shard's folder is refused."""
        path = self._paths.get(obj) or self._object_path(obj)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ShardError(f"cannot read {path}: {e}") from e
        if obj not in self._paths:
            if os.path.commonpath([os.path.realpath(path), self.folder]) != self.folder:
                os.close(fd)
                raise ShardError(f"{path} leads out of the shard's folder")
            self._paths[obj] = path
        return fd

    def _read_index(self, fd: int, obj: int) -> np.ndarray:
        size = os.fstat(fd).st_size
        n = self.per_object * 16 + 4
        raw = os.pread(fd, n, size - n) if size >= n else b""
        if len(raw) != n or not _intact(raw):
            raise ShardError(
                f"the chunk index of {self._object_path(obj)} is truncated or corrupted"
            )
        return np.frombuffer(raw[:-4], dtype="<u8").reshape(self.per_object, 2)

    def chunks(self, k0: int, k1: int) -> list[np.ndarray]:
        """Inner chunks ``k0 .. k1 - 1``, decoded (the last one trimmed to the array's rows)."""
        out: list[np.ndarray] = []
        k = k0
        while k < k1:
            obj = k // self.per_object
            stop = min(k1, (obj + 1) * self.per_object)
            fd = self._open(obj)
            try:
                index = None if fd is None else self._index.get(obj)
                if fd is not None and index is None:
                    index = self._index[obj] = self._read_index(fd, obj)
                out += [self._chunk(fd, index, obj, c) for c in range(k, stop)]
            finally:
                if fd is not None:
                    os.close(fd)
            k = stop
        return out

    def _chunk(self, fd: int | None, index: np.ndarray | None, obj: int, k: int) -> np.ndarray:
        rows = min(self.chunk_rows, self.shape[0] - k * self.chunk_rows)
        full = (self.chunk_rows, *self.shape[1:])
        offset, length = (
            (_EMPTY, _EMPTY)
            if index is None
            else (int(x) for x in index[k - obj * self.per_object])
        )
        if offset == _EMPTY:
            return np.zeros((rows, *self.shape[1:]), self.dtype)
        data = os.pread(fd, length, offset)
        if len(data) != length or not _intact(data):
            raise ShardError(f"chunk {k} of {self.dir} is truncated or corrupted (CRC32C)")
        arr = np.empty(full, self.dtype)
        body = memoryview(data)[:-4]
        if self.decoder is None:
            if len(body) != arr.nbytes:
                raise ShardError(
                    f"chunk {k} of {self.dir} has {len(body)} bytes, expected {arr.nbytes}"
                )
            arr.reshape(-1).view(np.uint8)[:] = np.frombuffer(body, np.uint8)
        else:
            self.decoder.decode(body, out=arr.reshape(-1).view(np.uint8))
        return arr[:rows]
