"""Check a bank against its catalog: every file present, of the right size and sha256; no extra
or uncommitted files; commit records agree with the catalog; each shard opens and its segment
and frame counts match. Every problem names its shard (or file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .bank import Bank
from .catalog import ShardRecord
from .errors import BankError
from .layout_zarr import shard_dir


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
        return {"bank": self.bank, "ok": self.ok, "shards_checked": self.shards_checked,
                "files_checked": self.files_checked, "bytes_checked": self.bytes_checked,
                "broken": self.broken}


BANK = "<bank>"


def verify_bank(root: str | Bank, *, checksums: bool = True, storage_options: dict | None = None) -> VerifyReport:
    """Verify the whole bank; never raises for damage it finds (it reports it)."""
    try:
        bank = root if isinstance(root, Bank) else Bank.open(root, storage_options)
        bank.reload()
    except BankError as e:
        report = VerifyReport(str(root))
        report.add(BANK, str(e))
        return report
    report = VerifyReport(bank.root)
    owned: set[str] = set()
    seen: set[str] = set()

    unreadable: set[str] = set()

    def broken_record(shard: str, e: BankError) -> None:
        unreadable.add(shard)
        report.add(shard, str(e))

    try:
        # streamed: with its file list, a record is ~10 KB; a whole 100 000-shard bank's is ~1 GB
        for rec in bank.iter_commit_records(on_error=broken_record):
            seen.add(rec.name)
            owned.update(rec.files)
            cat = bank.catalog.shards.get(rec.name)
            if cat is None:
                report.add(rec.name, "committed but not in the catalog (run `audistill shards sync`)")
                continue
            if _comparable(rec) != _comparable(cat):
                report.add(rec.name, "commit record disagrees with the catalog")
            try:
                bank.check_codec_states(rec)
            except BankError as e:
                report.add(rec.name, str(e))
            report.shards_checked += 1
            if _check_files(bank, rec, report, checksums):
                _check_structure(bank, cat, report)
    except (BankError, OSError) as e:  # the commits/ folder itself unreadable: a finding, not a crash
        report.add(BANK, f"cannot read the commit records: {e}")
    unknown = set(bank.catalog.shards) - seen
    for name, cat in sorted(bank.catalog.shards.items()):
        if name in unknown:
            report.shards_checked += 1
            if name not in unreadable:
                report.add(name, "no commit record (commits/NAME.json) for this cataloged shard: its files are unknown")
            _check_structure(bank, cat, report)
    _check_codec_states(bank, report, checksums)
    _check_extra_files(bank, owned, unknown, report)
    report.broken = dict(sorted(report.broken.items()))
    return report


def _comparable(rec: ShardRecord) -> dict:
    return rec.summary_json() | {"committed_at": 0}


def _check_files(bank: Bank, rec: ShardRecord, report: VerifyReport, checksums: bool) -> bool:
    """True when every file of the shard is intact."""
    before = len(report.broken.get(rec.name, []))
    for rel, meta in sorted(rec.files.items()):
        report.files_checked += 1
        if not bank.fs.exists(rel):
            report.add(rec.name, f"missing file {rel}")
            continue
        size = bank.fs.size(rel)
        report.bytes_checked += size
        if size != int(meta["bytes"]):
            report.add(rec.name, f"{rel}: {size} bytes, catalog says {meta['bytes']} (truncated or grown)")
        elif checksums and bank.fs.sha256(rel) != meta["sha256"]:
            report.add(rec.name, f"{rel}: sha256 mismatch (corrupted)")
    return len(report.broken.get(rec.name, [])) == before


def _check_structure(bank: Bank, rec: ShardRecord, report: VerifyReport) -> None:
    try:
        reader = bank.shard_reader(rec.name, record=rec, check="none")
        n = len(reader.segments)
        if n != rec.num_segments:
            report.add(rec.name, f"{n} segments in the shard, catalog says {rec.num_segments}")
            return
        for f in rec.fields.values():
            if f.teacher is None:
                continue
            frames = sum(reader.num_frames(f.name, i) for i in range(n))
            covered = sum(reader.covered(f.name, i) for i in range(n))
            if (frames, covered) != (f.num_frames, f.num_covered):
                report.add(rec.name, f"field {f.name!r}: {frames} frames / {covered} segments, catalog says "
                                     f"{f.num_frames} / {f.num_covered}")
    except BankError as e:
        report.add(rec.name, str(e))


def _check_codec_states(bank: Bank, report: VerifyReport, checksums: bool) -> None:
    for t in bank.catalog.teachers.values():
        for layer, ref in t.codec_state.items():
            if not bank.fs.exists(ref["path"]):
                report.add(BANK, f"teacher {t.name!r} layer {layer}: codec state {ref['path']} missing")
            elif checksums:
                try:
                    bank.load_codec_state(t.name, int(layer))
                except BankError as e:
                    report.add(BANK, str(e))


def _check_extra_files(bank: Bank, owned: set[str], unknown: set[str], report: VerifyReport) -> None:
    """Files under shards/ that no committed shard owns: leftovers of a crashed writer, or junk.
    (Files of the ``unknown`` shards - cataloged, without a commit record - are not listed again.)"""
    cataloged_dirs = {shard_dir(s) for s in bank.catalog.shards} if bank.layout == "zarr" else set()
    for rel in bank.fs.walk_files("shards"):
        if rel in owned:
            continue
        shard = _shard_of(rel, bank)
        if shard in unknown:
            continue
        if shard and any(rel.startswith(d + "/") for d in cataloged_dirs):
            report.add(shard, f"extra file {rel} not in the catalog")
        else:
            report.add(shard or BANK, f"uncommitted or stray file {rel} (a crashed writer's leftover?)")


def _shard_of(rel: str, bank: Bank) -> str | None:
    base = rel.split("/")[1] if rel.count("/") >= 1 else rel
    for name in bank.catalog.shards:
        if base == f"{name}.zarr" or base.startswith(f"{name}."):
            return name
    return None
