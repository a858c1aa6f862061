"""Bringing a bank back to a consistent state after other processes, crashes or losses.

- :func:`sync_catalog`: merge the commit records other processes wrote into ``bank.json``;
- :func:`rebuild_catalog`: make a lost ``bank.json`` again from the commit records;
- :func:`remove_temporaries`: delete what writers no longer alive left under ``.tmp-`` names;
- :func:`iter_commit_records`: every commit record, streamed (verify, rebuild, extraction resume).

The commit records (``commits/NAME.json``) are the record of truth; the catalog is their merge
plus the teachers, codec states and statistics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from . import __version__, lease
from .catalog import Catalog, CommitRecord, ShardRecord, TeacherRecord
from .errors import BankError, CatalogError, ShardError
from .fs import BankFS
from .segments import check_key

if TYPE_CHECKING:
    from .bank import Bank

CATALOG = "bank.json"
COMMITS = "commits"
SYNC_CLOCK_MARGIN_S = (
    600.0  # a commit record this much older than bank.json may still be missing from it
)


def commit_path(shard: str) -> str:
    """Where a shard's commit record lives (bank-relative)."""
    return f"{COMMITS}/{shard}.json"


def is_commit_file(name: str) -> bool:
    """A commit record's file name in ``commits/`` (not a temporary of an atomic write)."""
    return name.endswith(".json") and not name.startswith(".")


def commit_files(fs: BankFS) -> list[str]:
    """Bank-relative paths of every commit record, in name order (one listing)."""
    return sorted(f"{COMMITS}/{f}" for f in fs.listdir(COMMITS) if is_commit_file(f))


def read_commit_records(
    fs: BankFS, rels: list[str], on_error: Callable[[str, CatalogError], None] | None = None
) -> Iterator[CommitRecord]:
    """The commit records at ``rels``, in order (read concurrently on object stores: a bank of
    100 000 shards is as many small objects, which one GET after another would take most of an
    hour to read). ``on_error(shard, error)``: called for an unreadable record, which is skipped
    (default: raise)."""
    for rel, data in fs.read_many(rels):
        shard = rel.split("/", 1)[1][: -len(".json")]
        try:
            rec = parse_commit_record(rel, shard, data)
        except CatalogError as err:
            if on_error is None:
                raise
            on_error(shard, err)
            continue
        rec.commit_bytes = len(data)
        yield rec


def parse_commit_record(rel: str, shard: str, data: bytes) -> CommitRecord:
    """The commit record of ``shard`` read from ``rel``: the shard's name is the file's, checked
    as a shard name, and the record must name the same shard (a record copied or crafted under
    another name would otherwise put an unsafe or wrong name into the catalog)."""
    try:
        check_key(shard, "shard name")
        rec = CommitRecord.from_json(json.loads(data))
    except (BankError, ValueError, KeyError, TypeError) as e:
        raise CatalogError(f"commit record {rel} is unreadable: {e}") from e
    if rec.name != shard:
        raise CatalogError(
            f"commit record {rel} names shard {rec.name!r}, not {shard!r}: moved or crafted"
        )
    return rec


def iter_commit_records(
    bank: Bank, on_error: Callable[[str, CatalogError], None] | None = None
) -> Iterator[CommitRecord]:
    """Every commit record of ``bank`` with its file list, streamed in name order (see
    :func:`read_commit_records`)."""
    return read_commit_records(bank.fs, commit_files(bank.fs), on_error)


def commit_records(bank: Bank) -> dict[str, ShardRecord]:
    """Every commit record's catalog entry, by shard name."""
    return {rec.name: rec.slim() for rec in iter_commit_records(bank)}


def sync_catalog(bank: Bank) -> list[str]:
    """Merge commit records written by other processes into the catalog; returns new shards.

    Reads only the records that can differ from the catalog: shards it lacks, records modified
    since it was written (less ``SYNC_CLOCK_MARGIN_S`` for clocks that disagree), and records
    whose size is not that of the catalog's copy. Every run starts with a sync, and reading all
    of a 100 000-shard bank's records is 100 000 GETs on an object store."""
    bank.reload()
    catalog = bank.catalog
    written = catalog.written_at
    since = (
        -math.inf if written is None else written - SYNC_CLOCK_MARGIN_S
    )  # unknown: read them all
    stale = []
    for f, (size, mtime) in bank.fs.list_details(COMMITS).items():
        if not is_commit_file(f):
            continue
        rec = catalog.shards.get(f[: -len(".json")])
        if rec is None or mtime is None or mtime >= since or size != rec.commit_bytes:
            stale.append(f"{COMMITS}/{f}")
    added, dirty = [], False
    bad: list[str] = []
    for rec in read_commit_records(bank.fs, stale, on_error=lambda shard, e: bad.append(str(e))):
        cur = catalog.shards.get(rec.name)
        if cur is None or cur.summary_json() != rec.summary_json():
            catalog.shards[rec.name] = rec.slim()
            added.append(rec.name)
        elif (
            cur.commit_bytes != rec.commit_bytes
        ):  # same record; its size was not known (a schema-1 catalog)
            cur.commit_bytes, dirty = rec.commit_bytes, True
    if added or dirty:
        bank.save_catalog()
    if bad:  # the good ones are merged; these are damage to repair, not shards to guess at
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CatalogError(
            f"{bank.root}: {len(bad)} commit record(s) not merged: " + "; ".join(bad[:3]) + more
        )
    return sorted(added)


def rebuild_catalog(bank: Bank) -> None:
    """Make ``bank.json`` again from the commit records, after it was lost: each record holds
    its shard's entry and the records of the teachers whose fields it holds (identity, codec,
    codec-state references). Refused - naming why - where that cannot give back the catalog the
    shards were written under: records unreadable or from before teacher records were kept,
    teachers or codec states that disagree between shards, codec-state files missing or
    altered. Per-layer statistics are not in the records (`audistill shards stats`)."""
    root = bank.root
    if bank.fs.exists(CATALOG):
        raise CatalogError(
            f"{root} has a {CATALOG}: `audistill shards sync` merges commit records into it"
        )
    problems: list[str] = []
    records = list(iter_commit_records(bank, on_error=lambda shard, e: problems.append(str(e))))
    if not records and not problems:
        raise CatalogError(
            f"{root} holds no commit records (commits/): nothing to rebuild a catalog from"
        )
    old = [
        r.name for r in records if r.teachers is None and any(f.teacher for f in r.fields.values())
    ]
    if old:
        problems.append(
            f"{len(old)} commit record(s) predate teacher records (e.g. {', '.join(old[:3])}): "
            "restore "
            f"{CATALOG} from a backup"
        )
    layouts = sorted({r.layout for r in records})
    if len(layouts) > 1:
        problems.append(f"commit records of several layouts: {layouts}")
    catalog = Catalog(
        layout=layouts[0] if layouts else "zarr",
        created_by=f"audistill {__version__}",
        config={"rebuilt_from_commits": {"at": time.time(), "shards": len(records)}},
    )
    for r in records:
        problems += _merge_teachers(catalog, r)
        catalog.shards[r.name] = r.slim()
    bank.catalog = catalog
    problems += _check_rebuilt(bank, records)
    if problems:
        bank.catalog = None
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CatalogError(f"cannot rebuild {root}/{CATALOG}: " + "; ".join(problems[:8]) + more)
    bank.save_catalog()


def _merge_teachers(catalog: Catalog, r: CommitRecord) -> list[str]:
    """Add the teacher records of commit record ``r`` to ``catalog``; the problems found."""
    problems = []
    for name, tj in (r.teachers or {}).items():
        t = TeacherRecord.from_json(tj)
        have = catalog.teachers.get(name)
        if have is not None and have.to_json() == t.to_json():
            continue  # the usual case: every shard has the same record
        clash = sorted(
            layer
            for layer, ref in t.codec_state.items()
            if have is not None and layer in have.codec_state and have.codec_state[layer] != ref
        )
        if clash:
            problems.append(
                f"teacher {name!r} layers {clash}: shard {r.name} was encoded with other codec "
                "states than earlier shards"
            )
            continue
        try:
            catalog.add_teacher(t)
        except CatalogError as e:
            problems.append(f"shard {r.name}: {e}")
    return problems


def _check_rebuilt(bank: Bank, records: list[CommitRecord]) -> list[str]:
    """Every codec-state file the rebuilt catalog names is there and intact, and every shard was
    encoded with them."""
    problems = []
    for t in bank.catalog.teachers.values():
        for layer in t.codec_state:
            try:
                bank.load_codec_state(t.name, int(layer))
            except (CatalogError, FileNotFoundError) as e:
                problems.append(f"teacher {t.name!r} layer {layer}: {e}")
    for r in records:
        try:
            bank.check_codec_states(r)
        except ShardError as e:
            problems.append(str(e))
    return problems


def remove_temporaries(fs: BankFS, deep: bool = True) -> list[str]:
    """Delete temporary files no live writer owns (:mod:`audistill.shards.lease`: a temporary
    names its run; one whose run holds a live lease is being written now and stays).

    ``deep`` (``shards clean``): every ``.tmp-`` file and folder under shards/ - new shards', added
    fields', local atomic writes' (NAME.json.tmp-X) - found in one walk of shards/, not a listing
    per shard (100 000 requests on an object store); torn atomic writes of the catalog, commit
    records and codec states; and the lease and claim files of runs that are gone. Otherwise only
    what writers of new shards leave directly in shards/: one listing of the ``.tmp-`` prefix on an
    object store (every single-process extraction does this as it starts). Layouts name every
    temporary so (:mod:`audistill.shards.layouts`)."""
    leases = lease.Leases(fs)
    gone = [rel for rel in find_temporaries(fs, deep) if _orphan(fs, leases, rel)]
    if deep:
        gone += lease.stale_files(fs)
    for rel in sorted(gone):
        fs.remove(rel)
    return sorted(gone)


def find_temporaries(fs: BankFS, deep: bool = True) -> list[str]:
    """Every temporary file or folder (the outermost ``.tmp-`` path), whoever owns it; see
    :func:`remove_temporaries` for where ``deep`` looks."""
    if deep:
        rels = list(fs.walk_files("shards"))
        rels += [f"{COMMITS}/{f}" for f in fs.listdir(COMMITS)] + list(fs.walk_files("codec_state"))
        rels += [f for f in fs.listdir_root() if f.startswith(f"{CATALOG}.tmp-")]
    else:
        found = fs.sizes_with_prefix("shards", ".tmp-")
        rels = list(found) if found is not None else [f"shards/{f}" for f in fs.listdir("shards")]
    tops: set[str] = set()
    for rel in rels:
        parts = rel.split("/")
        # names in a bank hold no ".tmp-" but temporaries'
        k = next((i for i, p in enumerate(parts) if ".tmp-" in p), None)
        if k is not None:
            tops.add("/".join(parts[: k + 1]))
    return sorted(tops)


def _orphan(fs: BankFS, leases: lease.Leases, rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if lease.temp_run(name) is None:
        return True  # from a writer of a version before leases
    live = leases.live(lease.temp_run(name))
    if live is not None:
        return not live
    return lease.temporary_is_orphan(leases, name, fs.newest_mtime(rel))
