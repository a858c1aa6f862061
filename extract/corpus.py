"""Corpus inputs -> segment references with stable ids.

Inputs: a directory (recursive), a JSONL or CSV manifest (``id``, ``path`` or ``url``, ``domain``,
``dataset``, optional ``start``/``end``), or a WebDataset tar of audio (local or URL; a sample's
source is ``TARURL#KEY``, its domain from ``KEY.json`` when present).

Sources are written so they do not depend on where the corpus is mounted: a directory's files
are ``DIRNAME/relative/path``; a manifest's rows use their ``id`` (else the path as written).
Long recordings are cut into pieces of ``max_seconds`` (the last one shorter; a last piece under
``min_seconds`` is dropped). A file that fits in one piece gets the id of the whole file
(``end=None``), so its id does not depend on the measured duration.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from audistill.shards.segments import SAMPLE_RATE, Segment, make_segment_id

from .audio import AUDIO_EXTENSIONS, audio_info, is_url, tar_members
from .errors import AudioError, CorpusError


@dataclass(frozen=True)
class Item:
    """One recording (or a window of one) named by the corpus."""

    source: str  # stable name the ids derive from
    path: str  # where to read it (local path or URL; the tar for tar members)
    member: str | None = None  # tar member name
    domain: str = "unknown"
    dataset: str = ""
    start: float = 0.0
    end: float | None = None


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A planned segment: where its audio is, and the bank Segment it becomes. Slotted: every
    process holds the whole plan (~320 bytes a segment, ~370 without slots)."""

    id: str
    source: str
    path: str
    member: str | None
    start: float
    end: float | None
    domain: str
    dataset: str
    num_samples: int  # expected at 16 kHz (from the header)

    def segment(self, num_samples: int | None = None) -> Segment:
        return Segment(id=self.id, source=self.source, start=self.start, end=self.end, domain=self.domain,
                       dataset=self.dataset, num_samples=self.num_samples if num_samples is None else num_samples)

    def to_json(self) -> dict:
        return asdict(self)


def error_record(segment: str | None, file: str, reason: str) -> dict:
    return {"segment": segment, "file": file, "reason": reason, "time": time.time()}


def _dir_items(root: Path, domain: str, domain_map: dict[str, str], dataset: str) -> list[Item]:
    items = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        rel = p.relative_to(root)
        dom = next((domain_map[d] for d in rel.parts[:-1] if d in domain_map), domain)
        items.append(Item(source=f"{root.name}/{rel.as_posix()}", path=str(p), domain=dom,
                          dataset=dataset or root.name))
    return items


def _manifest_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        if path.endswith(".csv"):
            return list(csv.DictReader(f))
        rows = []
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path} line {n} is not JSON: {e}") from e
        return rows


def _manifest_items(path: str, domain: str, dataset: str) -> list[Item]:
    base = Path(path).parent
    items = []
    for n, row in enumerate(_manifest_rows(path), 1):
        loc = row.get("path") or row.get("url")
        if not loc:
            raise CorpusError(f"{path} row {n}: needs 'path' or 'url'")
        full = loc if is_url(loc) or Path(loc).is_absolute() else str(base / loc)
        start = float(row["start"]) if row.get("start") not in (None, "") else 0.0
        end = float(row["end"]) if row.get("end") not in (None, "") else None
        items.append(Item(source=str(row.get("id") or loc), path=full, domain=row.get("domain") or domain,
                          dataset=row.get("dataset") or dataset, start=start, end=end))
    return items


def _tar_items(url: str, domain: str, dataset: str, storage_options: dict | None) -> list[Item]:
    members = tar_members(url, storage_options)
    items = []
    for name in sorted(members):
        base = name.rsplit("/", 1)[-1]
        key = name[: len(name) - len(base)] + base.split(".", 1)[0]
        if "." + base.split(".", 1)[-1].lower() not in AUDIO_EXTENSIONS:
            continue
        meta = {}
        if f"{key}.json" in members:
            try:
                meta = json.loads(members[f"{key}.json"])
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = {}
        items.append(Item(source=f"{url}#{key}", path=url, member=name, domain=meta.get("domain", domain),
                          dataset=meta.get("dataset", dataset), start=0.0, end=None))
    return items


def scan_inputs(inputs: list[str], domain: str = "unknown", domain_map: dict[str, str] | None = None,
                dataset: str = "", storage_options: dict | None = None) -> list[Item]:
    """Items of every input (directories, manifests, tars), in a deterministic order."""
    items: list[Item] = []
    for inp in inputs:
        low = inp.lower()
        if low.endswith(".tar") or low.endswith(".tar.gz") or low.endswith(".tgz"):
            items += _tar_items(inp, domain, dataset, storage_options)
        elif low.endswith(".jsonl") or low.endswith(".csv"):
            if not Path(inp).is_file():
                raise CorpusError(f"manifest {inp} does not exist")
            items += _manifest_items(inp, domain, dataset)
        elif Path(inp).is_dir():
            items += _dir_items(Path(inp), domain, domain_map or {}, dataset)
        else:
            raise CorpusError(f"corpus input {inp}: not a directory, .jsonl/.csv manifest or .tar")
    return items


def split_item(item: Item, frames: int, sr: int, max_seconds: float, min_seconds: float) -> list[SegmentRef]:
    """Cut one item into segments of at most ``max_seconds``; AudioError if nothing usable."""
    total = frames / sr if sr else 0.0
    end = total if item.end is None else min(item.end, total)
    dur = end - item.start
    whole_id = make_segment_id(item.source, item.start, item.end)
    if frames == 0 or dur <= 0:
        raise AudioError("empty audio")
    if dur < min_seconds:
        raise AudioError(f"too short: {dur:.3f} s < {min_seconds} s")
    n = max(1, math.ceil(dur / max_seconds - 1e-9))
    if n == 1:
        return [SegmentRef(whole_id, item.source, item.path, item.member, item.start, item.end, item.domain,
                           item.dataset, int(round(dur * SAMPLE_RATE)))]
    out = []
    for i in range(n):
        s = round(item.start + i * max_seconds, 3)
        e = round(min(end, item.start + (i + 1) * max_seconds), 3)
        if e - s < min_seconds:
            continue
        out.append(SegmentRef(make_segment_id(item.source, s, e), item.source, item.path, item.member, s, e,
                              item.domain, item.dataset, int(round((e - s) * SAMPLE_RATE))))
    return out


def plan_segments(items: list[Item], max_seconds: float = 30.0, min_seconds: float = 0.1,
                  storage_options: dict | None = None) -> tuple[list[SegmentRef], list[dict]]:
    """Segments of every item (reading headers only) and error records for unusable items."""
    segs: list[SegmentRef] = []
    errors: list[dict] = []
    for item in items:
        try:
            frames, sr = audio_info(item.path, item.member, storage_options)
            segs += split_item(item, frames, sr, max_seconds, min_seconds)
        except AudioError as e:
            errors.append(error_record(make_segment_id(item.source, item.start, item.end),
                                       item.source if item.member else item.path, str(e)))
    seen: set[str] = set()
    unique = []
    for s in segs:
        if s.id in seen:
            errors.append(error_record(s.id, s.path, "duplicate segment (same source and offsets)"))
            continue
        seen.add(s.id)
        unique.append(s)
    return unique, errors
