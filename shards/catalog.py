"""The catalog, ``bank.json``: the single source of truth for what a bank holds.

Schema (version 2; docs/FORMAT.md)::

    {
      "format": "audistill-bank", "schema_version": 2, "created_by": "audistill 0.1.0",
      "sample_rate": 16000, "layout": "zarr" | "webdataset",
      "teachers": {NAME: TeacherRecord},
      "shards": {NAME: ShardRecord},
      "stats": {TEACHER: {LAYER: {"count", "mean", "std", "absmax"}}}
    }

See docs/FORMAT.md for every field.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields

from .errors import CatalogError, SchemaError
from .layouts import get_layout
from .segments import SAMPLE_RATE, check_key

FORMAT = "audistill-bank"
SCHEMA_VERSION = 2  # 2: shard entries without their file lists (those are in commits/NAME.json)


@dataclass
class TeacherRecord:
    """Who produced a set of features, and how they are stored."""

    name: str
    source: str
    dim: int
    frame_rate: float
    codec: dict  # {"name", "version", "config"}
    layers: list[int] = field(
        default_factory=list
    )  # layers kept (hidden-state indices; 0 = input embeddings)
    num_layers: int = 0  # hidden states the model has (so "sparse:K" is reproducible)
    revision: str = ""
    fingerprint: str = ""  # sha256 over the weights actually run
    input_sample_rate: int = SAMPLE_RATE
    domains: list[str] = field(default_factory=list)  # domains it was run on ([] = all)
    home_domain: str = "unknown"
    codec_state: dict = field(default_factory=dict)  # LAYER -> {"path", "sha256"} for fitted codecs
    extra: dict = field(default_factory=dict)  # adapter details: dtype, frame policy, pooling ...

    def __post_init__(self) -> None:
        check_key(self.name, "teacher name")
        if self.dim <= 0 or self.frame_rate <= 0:
            raise CatalogError(f"teacher {self.name!r}: dim and frame_rate must be positive")

    @property
    def hop(self) -> float:
        """Samples at 16 kHz per teacher frame (320 for 50 Hz)."""
        return SAMPLE_RATE / self.frame_rate

    def identity(self) -> tuple[str, str, str]:
        return (self.source, self.revision, self.fingerprint)

    def to_json(self) -> dict:
        return asdict(self)

    def differences(self, committed: TeacherRecord) -> list[str]:
        """How this (catalog) record disagrees with ``committed``, the copy a shard's commit record
        holds: what decodes and aligns its features must be equal; the layers and domains a
        teacher has may only have grown since (codec states: see Bank.check_codec_states)."""
        out = [
            f"{k} {getattr(self, k)!r} (shard committed with {getattr(committed, k)!r})"
            for k in (
                "source",
                "revision",
                "fingerprint",
                "dim",
                "frame_rate",
                "codec",
                "num_layers",
                "input_sample_rate",
                "home_domain",
                "extra",
            )
            if getattr(self, k) != getattr(committed, k)
        ]
        if not set(committed.layers) <= set(self.layers):
            out.append(
                f"layers {self.layers} lack {sorted(set(committed.layers) - set(self.layers))}"
            )
        if self.domains and not (committed.domains and set(committed.domains) <= set(self.domains)):
            out.append(
                f"domains {self.domains} (shard committed with {committed.domains or 'all'})"
            )
        return out

    @classmethod
    def from_json(cls, d: dict) -> TeacherRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class FieldRecord:
    """One unit of storage inside a shard: the audio, or some layers of one teacher."""

    name: str
    teacher: str | None = None  # None for the audio field
    layers: list[int] = field(default_factory=list)
    num_covered: int = 0  # segments that have this field
    num_frames: int = 0
    bytes: int | None = (
        None  # stored bytes of the field's files (None: a schema-1 record without files)
    )
    # stored bytes per layer, {"LAYER": n}: the compressed codec parts (None: unknown - a schema-1
    # WebDataset record; `shards info` then reads the field's index)
    layer_bytes: dict[str, int] | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "teacher": self.teacher,
            "layers": list(self.layers),
            "num_covered": self.num_covered,
            "num_frames": self.num_frames,
            "bytes": self.bytes,
            "layer_bytes": None if self.layer_bytes is None else dict(self.layer_bytes),
        }

    @classmethod
    def from_json(cls, d: dict) -> FieldRecord:
        return cls(
            name=d["name"],
            teacher=d.get("teacher"),
            layers=list(d.get("layers", [])),
            num_covered=int(d.get("num_covered", 0)),
            num_frames=int(d.get("num_frames", 0)),
            bytes=None if d.get("bytes") is None else int(d["bytes"]),
            layer_bytes=None
            if d.get("layer_bytes") is None
            else {str(k): int(v) for k, v in d["layer_bytes"].items()},
        )


@dataclass
class ShardRecord:
    """One committed shard as ``bank.json`` keeps it: counts and sizes, no file list - per-file
    lists would make the catalog O(files): ~50 files a Zarr shard, ~1 GB of catalog at 100 000
    shards, parsed by every reader. The file list is in the shard's :class:`CommitRecord`
    (:meth:`Bank.full_record <audistill.shards.bank.Bank.full_record>` reads it)."""

    name: str
    layout: str
    num_segments: int
    num_samples: int
    seconds_per_domain: dict[str, float]
    fields: dict[str, FieldRecord]
    committed_at: float = 0.0
    total_bytes: int = 0  # sum of the file sizes
    num_files: int = 0
    commit_bytes: int | None = (
        None  # size of commits/NAME.json as written (sync compares it); None: unknown
    )

    @property
    def bytes(self) -> int:
        return self.total_bytes

    def teacher_fields(self, teacher: str) -> list[FieldRecord]:
        return [f for f in self.fields.values() if f.teacher == teacher]

    def layers_of(self, teacher: str) -> set[int]:
        return {lay for f in self.teacher_fields(teacher) for lay in f.layers}

    def summary_json(self) -> dict:
        """What bank.json keeps of the record: everything but the file list."""
        # built by hand, in a fixed key order: asdict deep-copies recursively in Python, which
        # made saving a 10 000-shard catalog (and comparing records in a sync) take seconds
        return {
            "name": self.name,
            "layout": self.layout,
            "num_segments": self.num_segments,
            "num_samples": self.num_samples,
            "seconds_per_domain": dict(self.seconds_per_domain),
            "fields": {k: v.to_json() for k, v in self.fields.items()},
            "committed_at": self.committed_at,
            "bytes": self.total_bytes,
            "num_files": self.num_files,
        }

    def catalog_json(self) -> dict:
        """The record as bank.json holds it."""
        return self.summary_json() | {"commit_bytes": self.commit_bytes}

    def slim(self) -> ShardRecord:
        """The catalog entry of this record: itself (a :class:`CommitRecord` drops its own part)."""
        return self

    @classmethod
    def from_json(cls, d: dict) -> ShardRecord:
        """A catalog entry of either schema (a schema-1 entry lists files: its totals come from
        them)."""
        if d.get("files") is not None:
            return CommitRecord.from_json(d).slim()
        return ShardRecord(**_entry_args(d))


def _entry_args(d: dict) -> dict:
    return dict(
        name=d["name"],
        layout=d["layout"],
        num_segments=int(d["num_segments"]),
        num_samples=int(d["num_samples"]),
        seconds_per_domain=dict(d.get("seconds_per_domain", {})),
        fields={k: FieldRecord.from_json(v) for k, v in d["fields"].items()},
        committed_at=float(d.get("committed_at", 0.0)),
        total_bytes=int(d.get("bytes", 0)),
        num_files=int(d.get("num_files", 0)),
        commit_bytes=None if d.get("commit_bytes") is None else int(d["commit_bytes"]),
    )


@dataclass
class CommitRecord(ShardRecord):
    """A shard's commit record, ``commits/NAME.json``: its catalog entry plus every file with
    size and sha256, the codec states its fields were encoded with, and the records of its
    teachers. The totals of the entry are counted from the file list."""

    files: dict[str, dict] = field(
        default_factory=dict
    )  # bank-relative path -> {"bytes", "sha256"}
    # {FIELD: {"LAYER": sha256}}: the fitted codec state each layer was encoded with, checked
    # against the catalog's on open; None: a record from before it was kept
    codec_states: dict[str, dict[str, str]] | None = None
    # {TEACHER: TeacherRecord JSON} of the teachers whose fields the shard holds, as the catalog
    # had them at the commit: with them bank.json can be rebuilt from commits/; None: as above
    teachers: dict[str, dict] | None = None

    def __post_init__(self) -> None:
        self.recount()

    def recount(self) -> None:
        """The entry's totals, from the file list."""
        from .layouts import get_layout

        layout = get_layout(self.layout)
        self.total_bytes = sum(int(f["bytes"]) for f in self.files.values())
        self.num_files = len(self.files)
        per: dict[str | None, int] = {}
        for rel, meta in self.files.items():
            f = layout.field_of_file(self.name, rel)
            per[f] = per.get(f, 0) + int(meta["bytes"])
        for f in self.fields.values():
            f.bytes = per.get(f.name, 0)
            if f.layer_bytes is None and f.teacher is not None:
                f.layer_bytes = layout.layer_bytes_from_files(
                    self.name, f.name, f.layers, self.files
                )

    def to_json(self) -> dict:
        """The commit record as ``commits/NAME.json`` holds it."""
        out = self.summary_json() | {"files": {k: dict(v) for k, v in self.files.items()}}
        if self.codec_states is not None:
            out["codec_states"] = {k: dict(v) for k, v in self.codec_states.items()}
        if self.teachers is not None:
            out["teachers"] = self.teachers
        return out

    def slim(self) -> ShardRecord:
        """The catalog entry: this record without its file list, codec-state digests and
        teacher records."""
        return ShardRecord(
            self.name,
            self.layout,
            self.num_segments,
            self.num_samples,
            self.seconds_per_domain,
            self.fields,
            self.committed_at,
            self.total_bytes,
            self.num_files,
            self.commit_bytes,
        )

    @classmethod
    def from_json(cls, d: dict) -> CommitRecord:
        """A commit record (or a schema-1 catalog entry, which lists files too)."""
        return cls(
            **_entry_args(d),
            files=dict(d["files"]),
            codec_states=None
            if d.get("codec_states") is None
            else {k: dict(v) for k, v in d["codec_states"].items()},
            teachers=d.get("teachers"),
        )


@dataclass
class Catalog:
    layout: str
    teachers: dict[str, TeacherRecord] = field(default_factory=dict)
    shards: dict[str, ShardRecord] = field(default_factory=dict)
    stats: dict[str, dict[str, dict]] = field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE
    created_by: str = ""
    config: dict = field(default_factory=dict)  # the resolved extraction config(s), for provenance
    # when the bank.json this was read from was written (None: made here, or an old file); a sync
    # re-reads the commit records written since then
    written_at: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        get_layout(self.layout)  # CatalogError naming the known layouts

    # -- teachers ----------------------------------------------------------------------------
    def add_teacher(self, rec: TeacherRecord) -> TeacherRecord:
        """Register a teacher, or merge layers/domains into an existing one of the same identity."""
        old = self.teachers.get(rec.name)
        if old is None:
            self.teachers[rec.name] = rec
            return rec
        if old.identity() != rec.identity():
            raise CatalogError(
                f"teacher {rec.name!r} is already in the bank from {old.source!r} revision "
                f"{old.revision!r} (weights {old.fingerprint[:12] or '?'}); refusing features from "
                f"{rec.source!r} revision {rec.revision!r} (weights "
                f"{rec.fingerprint[:12] or '?'}): "
                "use another teacher name"
            )
        for attr in ("dim", "frame_rate", "codec"):
            if getattr(old, attr) != getattr(rec, attr):
                raise CatalogError(
                    f"teacher {rec.name!r}: {attr} {getattr(rec, attr)!r} differs from the bank's "
                    f"{getattr(old, attr)!r}"
                )
        old.layers = sorted(set(old.layers) | set(rec.layers))
        old.domains = (
            sorted(set(old.domains) | set(rec.domains)) if old.domains and rec.domains else []
        )
        old.codec_state.update(rec.codec_state)
        return old

    def merge(self, other: Catalog) -> None:
        """Take in what ``other`` (the catalog on disk, written by another run) holds and this one
        lacks: teachers (their layers, domains and fitted codec states), shards (a shard's entry
        with more fields wins), statistics and config entries. CatalogError where the two disagree
        on a teacher's identity or a fitted codec state."""
        for name, theirs in other.teachers.items():
            mine = self.teachers.get(name)
            if mine is not None:
                clash = sorted(
                    k
                    for k, ref in theirs.codec_state.items()
                    if k in mine.codec_state and mine.codec_state[k] != ref
                )
                if clash:
                    raise CatalogError(
                        f"teacher {name!r} layers {clash}: another run saved other fitted codec "
                        "states into this bank at the same time"
                    )
            self.add_teacher(TeacherRecord.from_json(theirs.to_json()))
        for name, rec in other.shards.items():
            mine = self.shards.get(name)
            if mine is None or set(rec.fields) > set(mine.fields):
                self.shards[name] = rec
        for key, per in other.stats.items():
            merged = self.stats.setdefault(key, {})
            for k, v in per.items():
                merged.setdefault(k, v)
        for k, v in other.config.items():
            self.config.setdefault(k, v)
        if other.written_at is not None:
            self.written_at = (
                other.written_at
                if self.written_at is None
                else min(self.written_at, other.written_at)
            )

    def teacher(self, name: str) -> TeacherRecord:
        from .errors import MissingDataError

        try:
            return self.teachers[name]
        except KeyError:
            raise MissingDataError(
                f"the bank has no teacher {name!r}; it has {sorted(self.teachers) or 'none'}"
            ) from None

    # -- totals ------------------------------------------------------------------------------
    @property
    def num_segments(self) -> int:
        return sum(s.num_segments for s in self.shards.values())

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards.values())

    def seconds_per_domain(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.shards.values():
            for d, sec in s.seconds_per_domain.items():
                out[d] = out.get(d, 0.0) + sec
        return out

    # -- (de)serialization --------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_by": self.created_by,
            "written_at": time.time(),
            "sample_rate": self.sample_rate,
            "layout": self.layout,
            "teachers": {k: v.to_json() for k, v in sorted(self.teachers.items())},
            "shards": {k: v.catalog_json() for k, v in sorted(self.shards.items())},
            "stats": self.stats,
            "config": self.config,
        }

    def dumps(self) -> bytes:
        # compact: json's C encoder runs only without indent - a 10 000-shard catalog took 1.7 s to
        # encode indented, 0.45 s compact (and is a fifth smaller); `python -m json.tool` shows it
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes, where: str = "bank.json") -> Catalog:
        try:
            d = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(f"{where} is not valid JSON: {e}") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise SchemaError(
                f"{where} is not an audistill bank catalog (format "
                f"{d.get('format') if isinstance(d, dict) else None!r})"
            )
        version = d.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise SchemaError(
                f"{where} has schema version {version!r}; this audistill reads versions "
                f"1..{SCHEMA_VERSION}"
                " - upgrade audistill to read this bank"
            )
        try:
            return cls(
                layout=d["layout"],
                teachers={k: TeacherRecord.from_json(v) for k, v in d.get("teachers", {}).items()},
                # a schema-1 catalog lists every file: keep the totals, drop the lists
                shards={k: ShardRecord.from_json(v) for k, v in d.get("shards", {}).items()},
                stats=d.get("stats", {}),
                sample_rate=int(d.get("sample_rate", SAMPLE_RATE)),
                created_by=d.get("created_by", ""),
                config=d.get("config", {}),
                written_at=float(d["written_at"])
                if isinstance(d.get("written_at"), (int, float))
                else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CatalogError(f"{where} is malformed: {e!r}") from e
