"""A bank: its catalog, its codec states, and atomic shard commits.

Commit protocol for a shard (one writer per shard: the writer claims it first, see
:mod:`audistill.shards.lease`):

1. every file is written under a temporary name (``shards/.tmp-*``) and hashed there;
2. the files are moved to their final names;
3. the shard is re-opened as a reader would and checked against what was written;
4. the commit record ``commits/NAME.json`` is written in one atomic write - the commit point;
5. the catalog ``bank.json`` is updated by its one writer (``update_catalog=True``), or later
   by :meth:`Bank.sync_catalog` when several processes wrote shards.

A crash before step 4 leaves temporary or uncommitted files that no reader uses (readers go
through the catalog), that ``verify`` reports, and that a re-run removes and rewrites. Temporaries
name their run; cleaning spares those of runs still alive (their leases say so).

How a shard becomes files is its layout's business (layouts.py); merging commit records,
rebuilding a lost catalog and removing temporaries are recovery.py's.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from typing import Literal

import numpy as np

from . import __version__, lease, recovery
from .catalog import Catalog, CommitRecord, FieldRecord, ShardRecord, TeacherRecord
from .errors import CatalogError, MissingDataError, ShardError, StorageError
from .fields import AUDIO, FieldSpec
from .fs import BankFS
from .layouts import Layout, LayoutName, ShardReader, get_layout
from .recovery import CATALOG, commit_path
from .segments import SAMPLE_RATE, check_key

CheckMode = Literal["none", "size", "sha256"]


class Bank:
    """A feature bank at ``root`` (a local path or an fsspec URL)."""

    def __init__(self, root: str, storage_options: dict | None = None):
        self.fs = BankFS(root, storage_options)
        self.root = str(root)
        self._catalog: Catalog | None = None
        self._stamp = (
            None  # bank.json's stamp when this process last read or wrote it (save_catalog)
        )

    def __repr__(self) -> str:
        return f"Bank({self.root!r})"

    # -- open / create -----------------------------------------------------------------------
    @classmethod
    def open(cls, root: str, storage_options: dict | None = None) -> Bank:
        bank = cls(root, storage_options)
        bank.reload()
        return bank

    @classmethod
    def create(
        cls, root: str, layout: LayoutName = "zarr", storage_options: dict | None = None
    ) -> Bank:
        """Open the bank at ``root``, creating an empty one of ``layout`` if none is there."""
        bank = cls(root, storage_options)
        if bank.fs.exists(CATALOG):
            bank.reload()
            if bank.catalog.layout != layout:
                raise CatalogError(
                    f"bank {root} has layout {bank.catalog.layout!r}, not {layout!r}"
                )
            return bank
        outer = bank.fs.enclosing(CATALOG)
        if outer is not None:  # its clean, verify and sync would take this bank's files for its own
            raise CatalogError(
                f"{root} lies inside the bank {outer}: make a bank outside any other"
            )
        held = recovery.commit_files(bank.fs)
        if held:
            # a bank whose catalog is gone: its teachers' identities and fitted codec states went
            # with it, and a new catalog would fit new states over the files the shards were
            # encoded with - every committed shard would then decode wrong, silently
            raise CatalogError(
                f"{root} holds {len(held)} committed shard(s) (commits/) but no {CATALOG}: its "
                f"catalog was lost; `audistill shards rebuild {root}` makes it again from the "
                "commit "
                f"records (or restore {CATALOG} from a backup)"
            )
        bank.catalog = Catalog(layout=layout, created_by=f"audistill {__version__}")
        bank.save_catalog()
        return bank

    @classmethod
    def rebuild(cls, root: str, storage_options: dict | None = None) -> Bank:
        """Make a lost ``bank.json`` again from the commit records
        (:func:`recovery.rebuild_catalog`)."""
        bank = cls(root, storage_options)
        recovery.rebuild_catalog(bank)
        return bank

    def reload(self) -> None:
        before = (
            self._disk_stamp() if self.fs.is_local else None
        )  # taken first: a later change is seen as one
        try:
            data = self.fs.read_bytes(CATALOG)
        except FileNotFoundError:
            raise CatalogError(f"{self.root} is not a bank: no {CATALOG} there") from None
        self._catalog = Catalog.loads(data, where=f"{self.root}/{CATALOG}")
        self._stamp = before if self.fs.is_local else self._stamp_of(data)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self.reload()
        assert self._catalog is not None
        return self._catalog

    @catalog.setter
    def catalog(self, catalog: Catalog | None) -> None:
        """Use ``catalog`` (not saved until :meth:`save_catalog`); None: read bank.json when next
        needed."""
        self._catalog = catalog

    @property
    def layout(self) -> str:
        return self.catalog.layout

    def layout_of(self, record: ShardRecord | None = None) -> Layout:
        """The layout of ``record`` (default: the bank's)."""
        return get_layout(self.layout if record is None else record.layout)

    def save_catalog(self) -> None:
        """Write ``bank.json``, merged with what is there now: another run's teachers, fitted codec
        states and shards stay (a plain rewrite would drop them until a sync). The catalog is
        claimed for the read-merge-write (:class:`lease.Claim`), so two savers never interleave.
        A save therefore never removes a shard or teacher another writer put there."""
        with lease.Claim(self.fs, "catalog", "bank"):
            stamp = self._disk_stamp()
            if stamp == "missing" and self._stamp not in (None, "missing"):
                # read here, gone now: the store lost its objects (or someone removed the bank) - a
                # catalog written now would name shards whose files may be gone with it
                raise StorageError(
                    f"{self.root}/{CATALOG} is gone from the store since this process read it; "
                    "not writing a catalog that may name lost objects (check the store, then "
                    "`audistill shards rebuild` from commits/)"
                )
            if stamp is None or stamp != self._stamp:
                try:
                    on_disk = Catalog.loads(
                        self.fs.read_bytes(CATALOG), where=f"{self.root}/{CATALOG}"
                    )
                except FileNotFoundError:
                    on_disk = None
                if on_disk is not None:
                    self.catalog.merge(on_disk)
            data = self.catalog.dumps()
            self.fs.write_bytes_atomic(CATALOG, data)
            self._stamp = self._stamp_of(data)

    def _disk_stamp(self):
        """What tells whether ``bank.json`` changed since this process read or wrote it: (size,
        mtime) locally, the ETag (an MD5 of a single-PUT object) on S3; None elsewhere (always
        merge)."""
        try:
            info = self.fs.fs.info(self.fs.path(CATALOG))
        except FileNotFoundError:
            return "missing"
        if self.fs.is_local:
            return (info.get("size"), info.get("mtime"))
        etag = info.get("ETag") or info.get("etag")
        return etag.strip('"') if isinstance(etag, str) else None

    def _stamp_of(self, data: bytes):
        """The stamp ``bank.json`` has when it holds ``data`` (just written or read)."""
        if self.fs.is_local:
            return self._disk_stamp()
        import hashlib

        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    # -- teachers and codec state --------------------------------------------------------------
    def register_teacher(self, rec: TeacherRecord, save: bool = True) -> TeacherRecord:
        merged = self.catalog.add_teacher(rec)
        if save:
            self.save_catalog()
        return merged

    def save_codec_state(
        self, teacher: str, layer: int, state: dict[str, np.ndarray], save: bool = True
    ) -> dict:
        """Store a fitted codec state once per (teacher, layer); returns its {path, sha256}."""
        import hashlib

        check_key(teacher, "teacher name")
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in state.items()})
        data = buf.getvalue()
        ref = {
            "path": f"codec_state/{teacher}/L{int(layer):02d}.npz",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        rec = self.catalog.teacher(teacher)
        old = rec.codec_state.get(str(layer))
        if old and old["sha256"] != ref["sha256"]:
            raise CatalogError(
                f"teacher {teacher!r} layer {layer} already has a different fitted codec state"
            )
        self.fs.write_bytes_atomic(ref["path"], data)
        rec.codec_state[str(layer)] = ref
        if save:
            self.save_catalog()
        return ref

    def load_codec_state(self, teacher: str, layer: int) -> dict[str, np.ndarray] | None:
        import hashlib

        ref = self.catalog.teacher(teacher).codec_state.get(str(layer))
        if ref is None:
            return None
        data = self.fs.read_bytes(ref["path"])
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise CatalogError(f"codec state {ref['path']} does not match its checksum")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    # -- writing shards --------------------------------------------------------------------------
    def is_committed(self, name: str) -> bool:
        return name in self.catalog.shards or self.fs.exists(commit_path(name))

    def field_spec(
        self, teacher: str, name: str | None = None, layers: list[int] | None = None
    ) -> FieldSpec:
        rec = self.catalog.teacher(teacher)
        return FieldSpec(
            name=name or teacher,
            teacher=teacher,
            layers=sorted(layers if layers is not None else rec.layers),
            codec=rec.codec,
            dim=rec.dim,
        )

    @contextlib.contextmanager
    def write_shard(
        self,
        name: str,
        teachers: list[str] | dict[str, list[int]] | None = None,
        update_catalog: bool = True,
    ) -> Iterator:
        """Write a new shard holding audio and ``teachers`` (a list: all kept layers of each; a
        dict: the given layers of each).

        Yields a writer with ``add(segment, audio_int16, {teacher: {layer: parts} | None})``.
        On a clean exit the shard is committed and ``writer.record`` holds its commit record; on an
        exception nothing is committed and the temporary files are removed.

        The shard is claimed for this run first (:class:`lease.Claim`; a live run writing it is
        waited for). If another run committed it meanwhile, the writer keeps what it is given and
        adds the teachers (layers) that run's shard lacks, after checking it holds the same
        segments.
        """
        check_key(name, "shard name")
        if not isinstance(teachers, dict):
            teachers = {t: None for t in teachers or []}
        with lease.Claim(self.fs, "shards", name):
            if name in self.catalog.shards or self.fs.exists(
                commit_path(name)
            ):  # another run committed it
                writer = LateShardWriter(self, name, teachers)
                yield writer
                writer.record = writer.commit()
            else:
                fields = [FieldSpec(AUDIO)] + [
                    self.field_spec(t, layers=lay) for t, lay in teachers.items()
                ]
                layout = self.layout_of()
                layout.remove_uncommitted(self.fs, name, fields)
                writer = layout.writer(self.fs, name, fields)
                try:
                    yield writer
                    counts = writer.close()
                    record = self._commit_new(name, writer, fields, counts)
                except BaseException:
                    writer.abort()
                    raise
                writer.record = (
                    record  # this shard's commit record (safe with several writers at once)
                )
        if update_catalog:
            self.catalog.shards[name] = writer.record.slim()
            self.save_catalog()

    def _commit_new(self, name: str, writer, fields: list[FieldSpec], counts: dict) -> CommitRecord:
        segs = writer.segments
        spd: dict[str, float] = {}
        for s in segs:
            spd[s.domain] = spd.get(s.domain, 0.0) + s.num_samples / SAMPLE_RATE
        frecs = {
            f.name: FieldRecord(f.name, f.teacher, list(f.layers), *counts[f.name]) for f in fields
        }
        for fname, lb in writer.layer_bytes().items():
            frecs[fname].layer_bytes = lb
        num_samples = writer.num_samples()
        files = writer.commit()
        record = CommitRecord(
            name=name,
            layout=self.layout,
            num_segments=len(segs),
            num_samples=num_samples,
            seconds_per_domain=spd,
            fields=frecs,
            files=files,
            committed_at=time.time(),
            codec_states={
                f.name: self._state_digests(f.teacher, f.layers)
                for f in fields
                if f.teacher is not None
            },
            teachers={
                f.teacher: self.catalog.teacher(f.teacher).to_json()
                for f in fields
                if f.teacher is not None
            },
        )
        self._check_committed(record)
        self._write_commit(record)
        return record

    def _write_commit(self, record: CommitRecord) -> None:
        data = json.dumps(record.to_json()).encode()
        self.fs.write_bytes_atomic(commit_path(record.name), data)
        record.commit_bytes = len(data)

    @contextlib.contextmanager
    def add_field(
        self, shard: str, teacher: str, layers: list[int] | None = None, update_catalog: bool = True
    ) -> Iterator:
        """Add a teacher's layers to a committed shard without touching what is there.

        Yields a writer with ``add(segment, {layer: parts} | None)``, called once per segment of
        the shard, in the shard's order (``reader.segments``). The shard is claimed for this run
        while the field is written (another run adding a field to it is waited for).
        """
        with lease.Claim(self.fs, "shards", shard):
            record = self.full_record(shard)
            want = set(layers if layers is not None else self.catalog.teacher(teacher).layers)
            known = self.catalog.shards[shard].layers_of(teacher)
            if (
                want <= record.layers_of(teacher) and not want & known
            ):  # another run added them meanwhile
                adder = AlreadyAdded(record)
                yield adder
            else:
                adder = yield from self._add_field(shard, teacher, layers, record)
        if update_catalog:
            self.catalog.shards[shard] = adder.record.slim()
            self.save_catalog()

    def _add_field(
        self, shard: str, teacher: str, layers: list[int] | None, record: CommitRecord | None = None
    ):
        """:meth:`add_field`'s work, under a claim its caller holds: yields the adder once, then
        commits; returns the adder (its ``record``: the shard's new commit record)."""
        # the commit record, not the catalog's copy: a field another process added since this
        # catalog was read is in it, and must stay in the record written back
        record = record or self.full_record(shard)
        have = record.layers_of(teacher)
        layers = sorted(layers if layers is not None else self.catalog.teacher(teacher).layers)
        dup = sorted(set(layers) & have)
        if dup:
            raise CatalogError(f"shard {shard!r} already holds teacher {teacher!r} layers {dup}")
        k = len(record.teacher_fields(teacher))
        fname = teacher if k == 0 and teacher not in record.fields else f"{teacher}-f{k + 1}"
        spec = self.field_spec(teacher, fname, layers)
        adder = self.layout_of(record).field_adder(self.fs, shard, spec, record.num_segments)
        try:
            yield adder
            covered, frames = adder.close()
            new_files = adder.commit()
        except BaseException:
            adder.abort()
            raise
        record.fields[fname] = FieldRecord(
            fname, teacher, layers, covered, frames, layer_bytes=adder.layer_bytes()
        )
        record.files.update(new_files)
        if record.codec_states is not None:
            record.codec_states[fname] = self._state_digests(teacher, layers)
        if record.teachers is not None:
            record.teachers[teacher] = self.catalog.teacher(teacher).to_json()
        record.recount()  # the totals, with the new files
        self._check_committed(record)
        self._write_commit(record)
        adder.record = record  # this shard's updated commit record
        return adder

    def _state_digests(self, teacher: str, layers: list[int]) -> dict[str, str]:
        """{"LAYER": sha256} of the fitted codec state each layer is encoded with (none:
        unfitted)."""
        refs = self.catalog.teacher(teacher).codec_state
        return {str(layer): refs[str(layer)]["sha256"] for layer in layers if str(layer) in refs}

    def check_codec_states(self, record: CommitRecord) -> None:
        """Refuse a shard whose fields were encoded with codec states other than the catalog's
        (its features would decode to wrong values without an error). ``record``: its commit
        record (:meth:`full_record`); records from before digests were kept pass."""
        for fname, digests in (record.codec_states or {}).items():
            teacher = record.fields[fname].teacher
            refs = (
                self.catalog.teachers[teacher].codec_state
                if teacher in self.catalog.teachers
                else {}
            )
            for layer, sha in digests.items():
                have = refs.get(layer, {}).get("sha256")
                if have != sha:
                    raise ShardError(
                        f"field {fname!r} layer {layer} was encoded with codec state {sha[:12]}, "
                        "but the "
                        f"catalog's teacher {teacher!r} has {(have or 'none')[:12]}: its features "
                        "would "
                        "decode wrong",
                        shard=record.name,
                    )

    def check_teacher_records(self, record: CommitRecord) -> None:
        """Refuse a shard whose teachers' catalog records differ from the copies its commit record
        holds (an edited bank.json: another frame rate misaligns every cropped target, another
        codec or dim decodes garbage). Records from before teacher copies were kept pass."""
        for name, tj in (record.teachers or {}).items():
            have = self.catalog.teachers.get(name)
            if have is None:
                raise ShardError(f"its teacher {name!r} is not in the catalog", shard=record.name)
            diff = have.differences(TeacherRecord.from_json(tj))
            if diff:
                raise ShardError(
                    f"the catalog's teacher {name!r} is not the one this shard was committed with: "
                    + "; ".join(diff)
                    + " (bank.json edited?)",
                    shard=record.name,
                )

    def _check_committed(self, record: CommitRecord) -> None:
        """Re-open the shard as a reader would and check it against its record."""
        reader = self.shard_reader(record.name, record=record, check="none")
        if len(reader.segments) != record.num_segments:
            raise ShardError(
                f"wrote {record.num_segments} segments but {len(reader.segments)} read back",
                shard=record.name,
            )
        for f in record.fields.values():
            if f.teacher is not None:
                got = sum(reader.num_frames(f.name, i) for i in range(record.num_segments))
                if got != f.num_frames:
                    raise ShardError(
                        f"field {f.name!r}: {f.num_frames} frames written, {got} read back",
                        shard=record.name,
                    )

    # -- recovery (recovery.py) --------------------------------------------------------------------
    def remove_temporaries(self, deep: bool = True) -> list[str]:
        """Delete temporary files of crashed writers (:func:`recovery.remove_temporaries`)."""
        return recovery.remove_temporaries(self.fs, deep)

    def commit_records(self) -> dict[str, ShardRecord]:
        """Every commit record's catalog entry, by shard name."""
        return recovery.commit_records(self)

    def sync_catalog(self) -> list[str]:
        """Merge commit records written by other processes into the catalog; returns new shards
        (:func:`recovery.sync_catalog`)."""
        return recovery.sync_catalog(self)

    # -- reading ---------------------------------------------------------------------------------
    def shard_record(self, name: str) -> ShardRecord:
        try:
            return self.catalog.shards[name]
        except KeyError:
            raise MissingDataError(f"bank {self.root} has no committed shard {name!r}") from None

    def full_record(self, name: str, record: ShardRecord | None = None) -> CommitRecord:
        """The shard's commit record: ``record`` if it is one, else ``commits/NAME.json`` checked
        against ``record`` (default: the catalog's entry) - one small read. A commit record may
        be newer than this catalog (another process added a teacher to the shard) but never
        hold less than it."""
        record = record or self.shard_record(name)
        if isinstance(record, CommitRecord):
            return record
        full = self.read_commit_record(name)
        lost = sorted(set(record.fields) - set(full.fields))
        if full.name != name or full.num_segments != record.num_segments or lost:
            raise ShardError(
                f"commit record {commit_path(name)} disagrees with the catalog "
                f"({full.num_segments} segments, "
                f"fields missing: {lost or 'none'}; run `audistill shards verify`)",
                shard=name,
            )
        return full

    def read_commit_record(self, name: str) -> CommitRecord:
        """``commits/NAME.json`` as stored (ShardError naming it if missing or unreadable)."""
        rel = commit_path(name)
        try:
            data = self.fs.read_bytes(rel)
        except FileNotFoundError:
            raise ShardError(
                f"commit record {rel} is missing (run `audistill shards verify`)", shard=name
            ) from None
        try:
            full = recovery.parse_commit_record(rel, name, data)
        except CatalogError as e:
            raise ShardError(str(e), shard=name) from e
        full.commit_bytes = len(data)
        return full

    def shard_files(self, name: str, record: ShardRecord | None = None) -> dict[str, dict]:
        """``{bank-relative path: {"bytes", "sha256"}}`` of every file of a committed shard."""
        return self.full_record(name, record).files

    def file_sizes(self, record: CommitRecord) -> dict[str, int | None]:
        """The size of every file of ``record`` as stored now; None: missing. On an object store
        they come from the layout's listing of the shard, not a request per file (~50 HEADs a
        Zarr shard, every time a shard is opened)."""
        listed = self.layout_of(record).listed_sizes(self.fs, record.name)
        out: dict[str, int | None] = {}
        for rel in record.files:
            if rel in listed:
                out[rel] = listed[rel]
                continue
            try:
                out[rel] = self.fs.size(rel)
            except FileNotFoundError:
                out[rel] = None
        return out

    def shard_reader(
        self, name: str, record: ShardRecord | None = None, check: CheckMode = "size"
    ) -> ShardReader:
        """Open one shard. ``check``: "size" compares file sizes with the commit record (cheap,
        catches truncation and missing files), "sha256" hashes every file, "none" trusts the
        files."""
        record = record or self.shard_record(name)
        files = None
        if check != "none":
            full = self.full_record(name, record)
            files = full.files
            self.check_codec_states(full)
            self.check_teacher_records(full)
            sizes = self.file_sizes(full)
            for rel, meta in full.files.items():
                size = sizes[rel]
                if size is None:
                    raise ShardError(f"file {rel} is missing", shard=name)
                if size != int(meta["bytes"]):
                    raise ShardError(
                        f"file {rel} has {size} bytes, the catalog says {meta['bytes']}", shard=name
                    )
                if check == "sha256" and self.fs.sha256(rel) != meta["sha256"]:
                    raise ShardError(f"file {rel} does not match its sha256", shard=name)
        return self.layout_of(record).reader(self.fs, name, list(record.fields), files)


class AlreadyAdded:
    """The adder :meth:`Bank.add_field` gives when another run added the same layers to the shard
    while this one computed them: it takes the segments and keeps nothing."""

    def __init__(self, record: CommitRecord):
        self.record = record

    def add(self, segment, layers: dict | None) -> None:
        pass


class LateShardWriter:
    """The writer :meth:`Bank.write_shard` gives when another run committed the shard while this
    one computed it: it keeps the segments it is given, then adds the teachers (layers) the
    committed shard lacks - after checking that shard holds the same segments in the same order."""

    def __init__(self, bank: Bank, name: str, teachers: dict[str, list[int] | None]):
        self.bank, self.name, self.teachers = bank, name, teachers
        self.segments: list = []
        self.features: list[dict] = []

    def add(self, segment, audio: np.ndarray | None, features: dict[str, dict | None]) -> None:
        self.segments.append(segment)
        self.features.append(features)

    def commit(self) -> CommitRecord:
        """Add what the committed shard lacks; its commit record after that."""
        record = self.bank.read_commit_record(self.name)
        held = [s.id for s in self.bank.shard_reader(self.name, record=record).segments]
        if held != [s.id for s in self.segments]:
            raise ShardError(
                f"another run committed this shard with other segments ({len(held)} there, "
                f"{len(self.segments)} here); nothing added",
                shard=self.name,
            )
        for teacher, layers in self.teachers.items():
            want = layers if layers is not None else self.bank.catalog.teacher(teacher).layers
            need = sorted(set(want) - record.layers_of(teacher))
            if need:
                record = self._add(teacher, need, record)
        return record

    def _add(self, teacher: str, layers: list[int], record: CommitRecord) -> CommitRecord:
        work = self.bank._add_field(self.name, teacher, layers, record)
        adder = next(work)
        try:
            for seg, feats in zip(self.segments, self.features, strict=True):
                parts = feats.get(teacher)
                adder.add(seg, None if parts is None else {k: parts[k] for k in layers})
        except BaseException as e:
            work.throw(e)  # removes the staged field, raises e
        try:
            next(work)
        except StopIteration as done:
            return done.value.record
        raise AssertionError("_add_field yields once")


CATALOG_SAVE_S = (
    30.0  # a long run (extraction, a copy) saves the catalog at most this often, and at its end
)
# ... and at most this share of the run's time: a 100 000-shard catalog is ~50 MB to write
CATALOG_SAVE_SHARE = 0.05


def catalog_save_due(since_last_s: float, last_save_s: float) -> bool:
    """Whether to rewrite the catalog now: not before CATALOG_SAVE_S, nor before the time since
    the last save is 1 / CATALOG_SAVE_SHARE times what that save took."""
    return since_last_s >= max(CATALOG_SAVE_S, last_save_s / CATALOG_SAVE_SHARE)


class CatalogSaver:
    """Saves a bank's catalog during a long run that commits many shards. The commit records
    (written with each shard) are the record of truth and the next run's sync merges what the
    catalog lacks; rewriting bank.json after every shard would cost O(shards^2) bytes."""

    def __init__(self, bank: Bank):
        self.bank = bank
        self.last, self.took = time.monotonic(), 0.0

    def maybe(self) -> None:
        if catalog_save_due(time.monotonic() - self.last, self.took):
            self.save()

    def save(self) -> None:
        t0 = time.monotonic()
        self.bank.save_catalog()
        self.last = time.monotonic()
        self.took = self.last - t0
