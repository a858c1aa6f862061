"""Check a bank against its catalog: every file present, of the right size and sha256; no extra
or uncommitted files; commit records agree with the catalog; each shard opens and its segment
and frame counts match. Every problem names its shard (or file)."""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import lease
from .bank import Bank
from .catalog import CommitRecord, ShardRecord
from .errors import BankError
from .recovery import CATALOG, COMMITS, iter_commit_records


@dataclass
class VerifyReport:
    bank: str
    shards_checked: int = 0
    files_checked: int = 0
    bytes_checked: int = 0
    broken: dict[str, list[str]] = field(default_factory=dict)  # shard (or "<bank>") -> problems

    @property
    def ok(self) -> bool:
        return not self.broken

    def add(self, shard: str, problem: str) -> None:
        self.broken.setdefault(shard, []).append(problem)

    def to_json(self) -> dict:
        return {
            "bank": self.bank,
            "ok": self.ok,
            "shards_checked": self.shards_checked,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "broken": self.broken,
        }


BANK = "<bank>"


def verify_bank(
    root: str | Bank,
    *,
    checksums: bool = True,
    storage_options: dict | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Verify the whole bank; never raises for damage it finds (it reports it).

    Shards are checked ``workers`` at a time (default: 16 on an object store, where every file
    is a request; 2 locally, where sha256 releases the GIL)."""
    try:
        bank = root if isinstance(root, Bank) else Bank.open(root, storage_options)
        bank.reload()
    except BankError as e:
        report = VerifyReport(str(root))
        report.add(BANK, str(e))
        return report
    report = VerifyReport(bank.root)
    workers = workers or (2 if bank.fs.is_local else 16)
    owned: set[str] = set()
    seen: set[str] = set()
    unreadable: set[str] = set()

    def broken_record(shard: str, e: BankError) -> None:
        unreadable.add(shard)
        report.add(shard, str(e))

    ids = _IdIndex()

    def merge(f: _Findings) -> None:
        ids.add(f.shard, f.ids)
        report.shards_checked += 1
        report.files_checked += f.files
        report.bytes_checked += f.bytes
        for p in f.problems:
            report.add(f.shard, p)

    with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        pending: deque[Future] = deque()
        try:
            # streamed, at most 4 x workers records at a time: with its file list a record is
            # ~10 KB, and a whole 100 000-shard bank's ~1 GB
            for rec in iter_commit_records(bank, on_error=broken_record):
                seen.add(rec.name)
                owned.update(rec.files)
                cat = bank.catalog.shards.get(rec.name)
                if cat is None:
                    report.add(
                        rec.name, "committed but not in the catalog (run `audistill shards sync`)"
                    )
                    continue
                pending.append(pool.submit(_verify_shard, bank, rec, cat, checksums))
                while len(pending) > 4 * workers:
                    merge(pending.popleft().result())
        except (
            BankError,
            OSError,
        ) as e:  # the commits/ folder itself unreadable: a finding, not a crash
            report.add(BANK, f"cannot read the commit records: {e}")
        unknown = set(bank.catalog.shards) - seen
        for name in sorted(unknown):
            pending.append(
                pool.submit(
                    _verify_shard,
                    bank,
                    None,
                    bank.catalog.shards[name],
                    checksums,
                    name in unreadable,
                )
            )
        while pending:
            merge(pending.popleft().result())
    for shard, problem in ids.duplicates(bank):
        report.add(shard, problem)
    _check_codec_states(bank, report, checksums)
    _check_extra_files(bank, owned, unknown, report)
    report.broken = dict(sorted(report.broken.items()))
    return report


@dataclass
class _Findings:
    shard: str
    problems: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    ids: list[str] = field(default_factory=list)  # the segment ids the shard holds (when it opened)


class _IdIndex:
    """Every segment id of the bank as a 64-bit digest and its shard's number (12 bytes a segment,
    ~430 MB at 36 million): a segment stored in two shards is counted twice by every reader."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.digests: list[np.ndarray] = []
        self.shards: list[np.ndarray] = []

    def add(self, shard: str, ids: list[str]) -> None:
        d = [
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids
        ]
        self.digests.append(np.array(d, dtype=np.uint64))
        self.shards.append(np.full(len(d), len(self.names), dtype=np.int32))
        self.names.append(shard)

    def duplicates(self, bank: Bank) -> list[tuple[str, str]]:
        """(shard, problem) for every id held by more than one shard, the ids read again from the
        shards whose digests collide (so a digest collision is never reported)."""
        if not self.digests:
            return []
        d, sh = np.concatenate(self.digests), np.concatenate(self.shards)
        order = np.argsort(d, kind="stable")
        d, sh = d[order], sh[order]
        same = np.flatnonzero(d[1:] == d[:-1])
        suspects = sorted({self.names[i] for i in np.concatenate([sh[same], sh[same + 1]])})
        where: dict[str, list[str]] = {}
        for name in suspects:
            for seg in bank.shard_reader(name, check="none").segments:
                where.setdefault(seg.id, []).append(name)
        return [
            (shards[-1], f"segment {i} is stored more than once (shards {', '.join(shards)})")
            for i, shards in sorted(where.items())
            if len(shards) > 1
        ]


def _verify_shard(
    bank: Bank, rec: CommitRecord | None, cat: ShardRecord, checksums: bool, said: bool = False
) -> _Findings:
    """One shard: ``rec`` its commit record (None: missing - ``said``: already reported
    unreadable), ``cat`` the catalog's entry. Runs in a worker thread; touches no shared state."""
    out = _Findings(cat.name)
    if rec is None:
        if not said:
            out.problems.append(
                "no commit record (commits/NAME.json) for this cataloged shard: its files are "
                "unknown"
            )
        _check_structure(bank, cat, out)
        return out
    if _comparable(rec) != _comparable(cat):
        out.problems.append("commit record disagrees with the catalog")
    for check in (bank.check_codec_states, bank.check_teacher_records):
        try:
            check(rec)
        except BankError as e:
            out.problems.append(str(e))
    if _check_files(bank, rec, out, checksums):
        _check_structure(bank, cat, out)
    return out


def _comparable(rec: ShardRecord) -> dict:
    return rec.summary_json() | {"committed_at": 0}


def _check_files(bank: Bank, rec: CommitRecord, out: _Findings, checksums: bool) -> bool:
    """True when every file of the shard is intact (sizes from the layout's listing of the shard:
    :meth:`Bank.file_sizes`)."""
    before = len(out.problems)
    try:
        sizes = bank.file_sizes(rec)
    except BankError as e:  # e.g. a symbolic link in the shard
        out.problems.append(str(e))
        return False
    for rel, meta in sorted(rec.files.items()):
        out.files += 1
        size = sizes[rel]
        if size is None:
            out.problems.append(f"missing file {rel}")
            continue
        out.bytes += size
        if size != int(meta["bytes"]):
            out.problems.append(
                f"{rel}: {size} bytes, catalog says {meta['bytes']} (truncated or grown)"
            )
        elif checksums and bank.fs.sha256(rel) != meta["sha256"]:
            out.problems.append(f"{rel}: sha256 mismatch (corrupted)")
    return len(out.problems) == before


def _check_structure(bank: Bank, rec: ShardRecord, out: _Findings) -> None:
    try:
        reader = bank.shard_reader(rec.name, record=rec, check="none")
        n = len(reader.segments)
        out.ids = [s.id for s in reader.segments]
        if n != rec.num_segments:
            out.problems.append(f"{n} segments in the shard, catalog says {rec.num_segments}")
            return
        for f in rec.fields.values():
            if f.teacher is None:
                continue
            frames = sum(reader.num_frames(f.name, i) for i in range(n))
            covered = sum(reader.covered(f.name, i) for i in range(n))
            if (frames, covered) != (f.num_frames, f.num_covered):
                out.problems.append(
                    f"field {f.name!r}: {frames} frames / {covered} segments, catalog says "
                    f"{f.num_frames} / {f.num_covered}"
                )
    except BankError as e:
        out.problems.append(str(e))


def _check_codec_states(bank: Bank, report: VerifyReport, checksums: bool) -> None:
    for t in bank.catalog.teachers.values():
        for layer, ref in t.codec_state.items():
            if not bank.fs.exists(ref["path"]):
                report.add(
                    BANK, f"teacher {t.name!r} layer {layer}: codec state {ref['path']} missing"
                )
            elif checksums:
                try:
                    bank.load_codec_state(t.name, int(layer))
                except BankError as e:
                    report.add(BANK, str(e))


def _check_extra_files(
    bank: Bank, owned: set[str], unknown: set[str], report: VerifyReport
) -> None:
    """Files under shards/ that no committed shard owns: leftovers of a crashed writer, or junk;
    and torn atomic writes of the catalog, commit records and codec states. Files a live run is
    writing now (its lease says so) are not problems. (Files of the ``unknown`` shards -
    cataloged, without a commit record - are not listed again.)"""
    leases = lease.Leases(bank.fs)

    def live(rel: str) -> bool:
        runs = [lease.temp_run(p) for p in rel.split("/") if ".tmp-" in p]
        return bool(runs) and runs[0] is not None and bool(leases.live(runs[0]))

    torn = [f"{COMMITS}/{f}" for f in bank.fs.listdir(COMMITS) if ".tmp-" in f]
    torn += [f for f in bank.fs.listdir_root() if f.startswith(f"{CATALOG}.tmp-")]
    torn += [r for r in bank.fs.walk_files("codec_state") if ".tmp-" in r]
    for rel in torn:
        if not live(rel):
            report.add(
                BANK,
                f"leftover of an interrupted write: {rel} (`audistill shards clean` removes it)",
            )
    for rel in bank.fs.walk_files("shards"):
        if rel in owned or live(rel):
            continue
        shard = _shard_of(rel, bank)
        if shard in unknown:
            continue
        if shard and bank.layout_of(bank.catalog.shards[shard]).in_shard_container(shard, rel):
            report.add(shard, f"extra file {rel} not in the catalog")
        else:
            report.add(
                shard or BANK, f"uncommitted or stray file {rel} (a crashed writer's leftover?)"
            )


def _shard_of(rel: str, bank: Bank) -> str | None:
    """The cataloged shard a path under shards/ is named for (shard names hold no dots:
    ``NAME.zarr/...``, ``NAME.FIELD.tar``; temporaries start with a dot)."""
    parts = rel.split("/")
    name = parts[1].split(".", 1)[0] if len(parts) > 1 else ""
    return name if name in bank.catalog.shards else None
