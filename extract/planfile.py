"""A plan file: the shard plan of a corpus, computed once, read by every slice in a moment.

Planning reads every manifest row (or file header) of the corpus: ~20 us a segment from a
manifest with durations, 12 minutes at 36 million segments, repeated by each of a SLURM array's
slices - and minutes more per slice where headers must be read. ``audistill plan`` writes the plan
once; ``audistill extract --plan FILE`` (every slice) reads only the index and its own shards.

Layout (little-endian)::

    b"AUDPLAN1"                      magic
    u64 H, then H bytes              header, JSON: {"format": "audistill-plan", "version": 1,
                                     "params": {...}, "shards": N, "errors": [...]}
    N x INDEX                        per shard: offset and length of its blob (from the file's
                                     start), segment count, planned samples, name
    blobs                            each shard's segments as ShardPlan.packed (zlib'd JSON rows)

``params`` are the planning settings (segment length, shard size, domains, inputs); a run whose
settings differ is refused rather than mixing two plans in one bank. Every shard read back is
checked against its name (the digest of its segment ids), so a damaged or edited file is an
error, never a shard under the wrong name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .audio import is_url, open_binary, read_ranges
from .errors import CorpusError
from .plan import ShardPlan

MAGIC = b"AUDPLAN1"
INDEX = np.dtype(
    [("offset", "<u8"), ("length", "<u4"), ("count", "<u4"), ("samples", "<u8"), ("name", "S64")]
)


class PlanFileError(CorpusError):
    """A plan file that cannot be used: unreadable, truncated, damaged, or made with other
    settings."""


def write_plan_file(
    path: str,
    plan: Sequence[ShardPlan],
    errors: list[dict],
    params: dict,
    storage_options: dict | None = None,
) -> None:
    """Write ``plan`` (with the planning ``errors`` and ``params``) to ``path``: local files under
    a temporary name renamed at the end; object stores in one upload that appears when complete."""
    index = np.zeros(len(plan), INDEX)
    header = json.dumps(
        {
            "format": "audistill-plan",
            "version": 1,
            "params": params,
            "shards": len(plan),
            "errors": errors,
        }
    ).encode()
    offset = len(MAGIC) + 8 + len(header) + index.nbytes
    for i, sh in enumerate(plan):
        if len(sh.name.encode()) > INDEX["name"].itemsize:
            raise PlanFileError(f"shard name {sh.name!r} is longer than a plan file holds")
        index[i] = (offset, len(sh.packed), sh.count, sh.samples, sh.name.encode())
        offset += len(sh.packed)
    local = not is_url(path)
    target = path.removeprefix("file://")
    tmp = f"{target}.tmp-{os.getpid()}" if local else path
    if local:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open_binary(tmp, storage_options, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(header)) + header + index.tobytes())
            for sh in plan:
                f.write(sh.packed)
        if local:
            os.replace(tmp, target)
    finally:
        if local and os.path.exists(tmp):
            os.remove(tmp)


class PlanFile(Sequence[ShardPlan]):
    """The plan in a plan file, as a sequence of shards read on demand: ``plan[i::n]`` (a slice's
    shards) reads the index and those shards' blobs only."""

    def __init__(self, path: str, storage_options: dict | None = None):
        self.path, self.so = path, storage_options
        try:
            with open_binary(path, storage_options) as f:
                head = f.read(len(MAGIC) + 8)
                if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
                    raise PlanFileError(f"plan file {path}: not an audistill plan file")
                (hlen,) = struct.unpack("<Q", head[len(MAGIC) :])
                raw = f.read(hlen)
                try:
                    header = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise PlanFileError(f"plan file {path}: truncated or damaged header") from None
                if header.get("format") != "audistill-plan" or header.get("version") != 1:
                    raise PlanFileError(
                        f"plan file {path}: format {header.get('format')!r} version "
                        f"{header.get('version')!r} is not audistill-plan version 1"
                    )
                n = int(header["shards"])
                data = f.read(n * INDEX.itemsize)
                if len(data) != n * INDEX.itemsize:
                    raise PlanFileError(
                        f"plan file {path}: truncated index ({len(data)} of {n * INDEX.itemsize} "
                        "bytes)"
                    )
                self.index = np.frombuffer(data, INDEX)
                end = int(self.index["offset"][-1]) + int(self.index["length"][-1]) if n else 0
                size = f.seek(0, os.SEEK_END)
                if n and size < end:
                    raise PlanFileError(f"plan file {path}: truncated ({size} of {end} bytes)")
        except FileNotFoundError:
            raise PlanFileError(f"plan file {path} does not exist") from None
        except OSError as e:
            raise PlanFileError(f"plan file {path}: cannot read it ({e})") from e
        self.params: dict = header["params"]
        self.errors: list[dict] = header["errors"]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._read(range(len(self))[key])
        i = range(len(self))[key]  # IndexError out of range, negative indices as usual
        return self._read([i])[0]

    def __iter__(self) -> Iterator[ShardPlan]:
        for start in range(0, len(self), 256):
            yield from self._read(range(start, min(len(self), start + 256)))

    def names(self) -> list[str]:
        """Every shard's name, from the index (no shard is read)."""
        return [n.decode() for n in self.index["name"]]

    def _blobs(self, which) -> list[bytes]:
        """The packed shards ``which``: only their bytes (ranged reads on an object store)."""
        rows = [self.index[i] for i in which]
        return read_ranges(
            self.path,
            [(int(r["offset"]), int(r["offset"]) + int(r["length"])) for r in rows],
            self.so,
        )

    def _read(self, which) -> list[ShardPlan]:
        which = list(which)
        out = []
        for i, blob in zip(which, self._blobs(which), strict=True):
            row = self.index[i]
            name = row["name"].decode()
            sh = ShardPlan(name, blob, int(row["count"]), int(row["samples"]))
            try:
                ids = [s.id for s in sh.segments]
            except Exception as e:  # noqa: BLE001 - zlib / JSON errors of a damaged blob
                raise PlanFileError(
                    f"plan file {self.path}: shard {name} is damaged ({e})"
                ) from None
            digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:8]
            if len(ids) != sh.count or not name.endswith(f"-{digest}"):
                raise PlanFileError(
                    f"plan file {self.path}: shard {name} does not hold the segments its name "
                    "says (damaged or edited)"
                )
            out.append(sh)
        return out

    def check(self, params: dict) -> None:
        """Refuse a run whose planning settings differ from the ones the file was made with."""
        diff = [
            f"{k}: the plan has {self.params.get(k)!r}, this run {v!r}"
            for k, v in params.items()
            if self.params.get(k) != v
        ]
        if diff:
            raise PlanFileError(
                f"plan file {self.path} was made with other settings ({'; '.join(diff)}); "
                "make it again with `audistill plan`, or run with its settings"
            )
