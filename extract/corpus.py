"""Corpus inputs -> segment references with stable ids.

Inputs: a directory (recursive), a JSONL or CSV manifest (``id``, ``path`` or ``url``, ``domain``,
``dataset``, optional ``start``/``end``, ``member`` and ``duration``), or a WebDataset tar of audio
(local or URL; a sample's source is ``TARURL#KEY``, its domain from ``KEY.json`` when present).
NeMo manifests read as they are: ``audio_filepath`` is the path; with ``offset``, ``duration`` is
the window's length from there (``start = offset``, ``end = offset + duration``), without it the
file's.

Planning needs every recording's length. It is read from the file's header (one open per file,
done by ``probe_workers`` threads) unless a manifest row gives ``duration``: the whole file's
length in seconds. At 10k-100k hours that is millions of opens before the first batch, in every
slice and on every re-run, so ``audistill manifest`` probes a corpus once and writes a
manifest with durations (and the same ids) that every later run plans from without opening a
file; ``audistill plan`` goes one step further and stores the shard plan itself (planfile.py).
A declared duration is trusted for planning and checked when the file is decoded: a file of
another length (beyond rounding) is recorded as an error, never stored cut or mismatched.

A manifest's local paths are read relative to its folder and must stay inside it (``../`` or an
absolute path elsewhere is refused, naming the row) unless ``allow_outside_root`` is given
(``--allow-outside-root``): a manifest from elsewhere must not read any file its user can.
URLs are not confined. Names inside tars are only keys of the tar, never paths. Values of the
wrong JSON type (``path: 42``, ``domain: ["a"]``) are refused when planning, naming the row or
the tar member.

Sources are written so they do not depend on where the corpus is mounted: a directory's files
are ``DIRNAME/relative/path``; a manifest's rows use their ``id`` (else the path as written).
Long recordings are cut into pieces of ``max_seconds`` (the last one shorter; a last piece under
``min_seconds`` is dropped). A file that fits in one piece gets the id of the whole file
(``end=None``), so its id does not depend on the measured duration.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from audistill.shards.segments import SAMPLE_RATE, Segment, make_segment_id

from .audio import AUDIO_EXTENSIONS, audio_info, is_url, tar_cut, tar_members
from .errors import AudioError, CorpusError

log = logging.getLogger(__name__)
SLOW_PROBE_S = 60.0  # planning slower than this suggests writing a manifest with durations
LATENCY_BOUND_S = (
    0.0005  # reading a header slower than this: storage latency, which threads overlap
)


@dataclass(frozen=True, slots=True)
class Item:
    """One recording (or a window of one) named by the corpus."""

    source: str  # stable name the ids derive from
    path: str  # where to read it (local path or URL; the tar for tar members)
    member: str | None = None  # tar member name
    domain: str = "unknown"
    dataset: str = ""
    start: float = 0.0
    end: float | None = None
    duration: float | None = None  # the file's whole length (s), when a manifest declares it
    error: str | None = None  # why it is unusable, when known from listing it (a tar cut short)

    def to_row(self) -> dict:
        """This item as a manifest row (the form :func:`scan_inputs` reads back to the same
        item)."""
        row: dict = {"id": self.source, "path": self.path}
        if self.member is not None:
            row["member"] = self.member
        row |= {"domain": self.domain, "dataset": self.dataset}
        if self.start:
            row["start"] = self.start
        if self.end is not None:
            row["end"] = self.end
        if self.duration is not None:
            row["duration"] = self.duration
        return row


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
    declared: float | None = (
        None  # the whole file's length as a manifest declared it (decode checks it)
    )

    def segment(self, num_samples: int | None = None) -> Segment:
        return Segment(
            id=self.id,
            source=self.source,
            start=self.start,
            end=self.end,
            domain=self.domain,
            dataset=self.dataset,
            num_samples=self.num_samples if num_samples is None else num_samples,
        )

    def to_json(self) -> dict:
        return asdict(self)


def error_record(segment: str | None, file: str, reason: str) -> dict:
    return {"segment": segment, "file": file, "reason": reason, "time": time.time()}


def item_error(item: Item, reason: str) -> dict:
    """The error record of an item that cannot be used at all (named by its whole-item id)."""
    return error_record(
        make_segment_id(item.source, item.start, item.end),
        item.source if item.member else item.path,
        reason,
    )


def _walk_sorted(folder: str) -> Iterator[tuple[str, str | None]]:
    """(path, None) for the files under ``folder`` in the order of
    ``sorted(Path(folder).rglob("*"))``, streamed: every folder's entries sorted by name,
    sub-folders entered where they sort (not through symlinks, as rglob). A sorted rglob holds a
    Path per file, ~10 GB for 36 million files. (path, why) for a folder that cannot be listed or an
    entry that cannot be inspected (a symlink loop): the caller records it, the walk goes on."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        yield folder, f"unreadable folder: {e.strerror or e}"
        return
    for e in entries:
        try:
            is_dir, is_file = e.is_dir(follow_symlinks=False), e.is_file()
        except OSError as err:
            yield e.path, f"cannot inspect: {err.strerror or err}"
            continue
        if is_dir:
            yield from _walk_sorted(e.path)
        elif is_file:
            yield e.path, None


def _dir_items(root: Path, domain: str, domain_map: dict[str, str], dataset: str) -> Iterator[Item]:
    base = str(root)
    for path, problem in _walk_sorted(base):
        if problem is None and os.path.splitext(path)[1].lower() not in AUDIO_EXTENSIONS:
            continue
        rel = Path(
            path[len(base) + 1 :] if path.startswith(base + os.sep) else os.path.relpath(path, base)
        )
        # a mapped folder inside the input, else the input folder itself (`--domain-map real=speech`
        # with
        # corpus/real as the input), else the default
        dom = next(
            (domain_map[d] for d in rel.parts[:-1] if d in domain_map),
            domain_map.get(root.name, domain),
        )
        yield Item(
            source=unicode_name(f"{root.name}/{rel.as_posix()}"),
            path=str(root / rel),
            domain=dom,
            dataset=dataset or unicode_name(root.name),
            error=problem,
        )


def unicode_name(name: str) -> str:
    """``name`` as valid Unicode: a file name that is not UTF-8 comes from the OS with its bytes as
    lone surrogates, which no JSON / Zarr / tar writer takes; its source (the bank's name for it)
    spells them as ``\\xNN`` instead (stable; valid names are unchanged). The path keeps the
    OS's form, to open the file."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _manifest_rows(path: str) -> Iterator[dict]:
    with open(path, newline="") as f:
        if path.lower().endswith(".csv"):
            yield from csv.DictReader(f)
            return
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path} line {n} is not JSON: {e}") from e
                if not isinstance(row, dict):
                    raise CorpusError(f"{path} line {n} is not a JSON object (one row per line)")
                yield row


def _number(row: dict, key: str, where: str) -> float | None:
    v = row.get(key)
    if v in (None, ""):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise CorpusError(f"{where}: {key} {v!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise CorpusError(f"{where}: {key} {v!r} must be a finite number >= 0")
    return x


def _text(row: dict, key: str, where: str, ints: bool = False) -> str | None:
    """``row[key]`` as text (None when absent or empty); CorpusError for another JSON type (a list
    or number where a name belongs would be stored as the bank's name for it, or crash later)."""
    v = row.get(key)
    if v in (None, ""):
        return None
    if isinstance(v, str) or ints and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise CorpusError(
        f"{where}: {key} must be {'text or an integer' if ints else 'text'}, not {json.dumps(v)}"
    )


def _inside(path: str, root: str) -> bool:
    """Whether normalized ``path`` is ``root`` or under it, both absolute or both relative
    ("." for the current folder)."""
    if root == ".":
        return not (os.path.isabs(path) or path == ".." or path.startswith(".." + os.sep))
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _local_path(loc: str, base: str, root: str, where: str, allow_outside_root: bool) -> str:
    """A manifest row's local path: relative ones are resolved against the manifest's folder
    (``base``, normalized; ``root`` is it made absolute). One outside that folder (``../``,
    absolute) is refused unless allowed: a manifest from elsewhere must not read any file the user
    can. The check is on the path as written (normalized); only a path that fails it is resolved (an
    absolute path written through another name of the folder, e.g. its symlinks resolved, is
    inside). String operations only for a row inside: planning reads millions of rows."""
    # os.path, not pathlib: pathlib was a quarter of planning from a manifest
    absolute = os.path.isabs(loc)
    full = os.path.normpath(loc if absolute else os.path.join(base, loc))
    if allow_outside_root or _inside(full, root if absolute else base):
        return full
    if _inside(os.path.realpath(full), os.path.realpath(root)):
        return full
    raise CorpusError(
        f"{where}: path {loc!r} is outside the manifest's folder {root}; write the manifest "
        "in a folder that holds the audio, or pass --allow-outside-root"
    )


def _manifest_items(
    path: str, domain: str, dataset: str, allow_outside_root: bool = False
) -> Iterator[Item]:
    base = os.path.normpath(os.path.dirname(path) or ".")
    root = os.path.abspath(base)
    for n, row in enumerate(_manifest_rows(path), 1):
        where = f"{path} row {n}"
        loc = (
            _text(row, "path", where)
            or _text(row, "url", where)
            or _text(row, "audio_filepath", where)
        )
        if not loc:
            raise CorpusError(f"{where}: needs 'path', 'url' or 'audio_filepath'")
        full = loc if is_url(loc) else _local_path(loc, base, root, where, allow_outside_root)
        name = _text(row, "id", where, ints=True) or loc
        member, dom, dset = (
            _text(row, "member", where),
            _text(row, "domain", where),
            _text(row, "dataset", where),
        )
        start = _number(row, "start", where) or 0.0
        end = _number(row, "end", where)
        duration = _number(row, "duration", where)
        if (
            "audio_filepath" in row and "offset" in row
        ):  # a NeMo row: duration is the window's, from offset
            start = _number(row, "offset", where) or 0.0
            end = None if duration is None else round(start + duration, 6)
            duration = None
        if end is not None and end <= start:
            raise CorpusError(f"{where}: end {end} is not after start {start}")
        if duration == 0:
            raise CorpusError(
                f"{where}: duration 0 (leave it out to read the length from the file)"
            )
        yield Item(
            source=unicode_name(name),
            path=full,
            member=member,
            domain=dom or domain,
            dataset=dset or dataset,
            start=start,
            end=end,
            duration=duration,
        )


def _tar_items(url: str, domain: str, dataset: str, storage_options: dict | None) -> list[Item]:
    try:
        members = tar_members(url, storage_options)
    except (
        AudioError
    ):  # an unreadable tar: one item that fails when probed, so the error is recorded
        return [Item(source=unicode_name(url), path=url, member="", domain=domain, dataset=dataset)]
    items = []
    for name in sorted(members):
        base = name.rsplit("/", 1)[-1]
        key = name[: len(name) - len(base)] + base.split(".", 1)[0]
        if "." + base.split(".", 1)[-1].lower() not in AUDIO_EXTENSIONS:
            continue
        meta = _tar_meta(url, key, members)
        where = f"{url} member {key}.json"
        items.append(
            Item(
                source=unicode_name(f"{url}#{key}"),
                path=url,
                member=name,
                domain=_text(meta, "domain", where) or domain,
                dataset=_text(meta, "dataset", where) or dataset,
                start=0.0,
                end=None,
            )
        )
    cut = tar_cut(url, storage_options)
    if (
        cut is not None
    ):  # the members before the cut are planned; the cut is recorded against the tar
        items.append(
            Item(
                source=unicode_name(url),
                path=url,
                member="",
                domain=domain,
                dataset=dataset,
                error=cut,
            )
        )
    return items


def _tar_meta(url: str, key: str, members: dict[str, bytes]) -> dict:
    """A tar sample's ``KEY.json`` (``{}`` without one); CorpusError when it is not a JSON
    object."""
    raw = members.get(f"{key}.json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{url} member {key}.json is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CorpusError(f"{url} member {key}.json is not a JSON object")
    return meta


def iter_items(
    inputs: list[str],
    domain: str = "unknown",
    domain_map: dict[str, str] | None = None,
    dataset: str = "",
    storage_options: dict | None = None,
    allow_outside_root: bool = False,
) -> Iterator[Item]:
    """Items of every input (directories, manifests, tars), in a deterministic order, streamed
    (a corpus of millions of files is never held as objects). Inputs are checked first.
    ``allow_outside_root``: manifests may name local files outside their own folder."""
    kinds = []
    for inp in inputs:
        low = inp.lower()
        if low.endswith(".tar") or low.endswith(".tar.gz") or low.endswith(".tgz"):
            kinds.append("tar")
        elif low.endswith((".jsonl", ".csv", ".json")):  # .json: JSON lines, as NeMo names them
            if not Path(inp).is_file():
                raise CorpusError(f"manifest {inp} does not exist")
            kinds.append("manifest")
        elif Path(inp).is_dir():
            kinds.append("dir")
        else:
            raise CorpusError(
                f"corpus input {inp}: not a directory, .jsonl/.json/.csv manifest or .tar"
            )
    return _iter_items(
        inputs, kinds, domain, domain_map or {}, dataset, storage_options, allow_outside_root
    )


def _iter_items(
    inputs, kinds, domain, domain_map, dataset, storage_options, allow_outside_root
) -> Iterator[Item]:
    for inp, kind in zip(inputs, kinds, strict=True):
        if kind == "tar":
            yield from _tar_items(inp, domain, dataset, storage_options)
        elif kind == "manifest":
            yield from _manifest_items(inp, domain, dataset, allow_outside_root)
        else:
            yield from _dir_items(Path(inp), domain, domain_map, dataset)


def scan_inputs(
    inputs: list[str],
    domain: str = "unknown",
    domain_map: dict[str, str] | None = None,
    dataset: str = "",
    storage_options: dict | None = None,
    allow_outside_root: bool = False,
) -> list[Item]:
    """Every item of :func:`iter_items`, as a list."""
    return list(
        iter_items(inputs, domain, domain_map, dataset, storage_options, allow_outside_root)
    )


def split_item(
    item: Item, total: float, max_seconds: float, min_seconds: float
) -> list[SegmentRef]:
    """Cut one item of ``total`` seconds (the whole file) into segments of at most ``max_seconds``;
    AudioError if nothing usable."""
    end = total if item.end is None else min(item.end, total)
    dur = end - item.start
    whole_id = make_segment_id(item.source, item.start, item.end)
    if total <= 0 or dur <= 0:
        raise AudioError("empty audio")
    if dur < min_seconds:
        raise AudioError(f"too short: {dur:.3f} s < {min_seconds} s")
    n = max(1, math.ceil(dur / max_seconds - 1e-9))
    if n == 1:
        return [
            SegmentRef(
                whole_id,
                item.source,
                item.path,
                item.member,
                item.start,
                item.end,
                item.domain,
                item.dataset,
                int(round(dur * SAMPLE_RATE)),
                item.duration,
            )
        ]
    out = []
    for i in range(n):
        s = round(item.start + i * max_seconds, 3)
        e = round(min(end, item.start + (i + 1) * max_seconds), 3)
        if e - s < min_seconds:
            continue
        out.append(
            SegmentRef(
                make_segment_id(item.source, s, e),
                item.source,
                item.path,
                item.member,
                s,
                e,
                item.domain,
                item.dataset,
                int(round((e - s) * SAMPLE_RATE)),
                item.duration,
            )
        )
    return out


def _probe(item: Item, storage_options: dict | None) -> float | AudioError:
    try:
        frames, sr = audio_info(item.path, item.member, storage_options)
    except AudioError as e:
        return e
    return frames / sr if sr else 0.0


def probe_lengths(
    items: list[Item], storage_options: dict | None = None, workers: int = 16
) -> list[float | AudioError]:
    """Every item's whole length in seconds, or the AudioError that makes it unusable, in order.

    Declared durations are used as they are (a manifest written by :func:`probe_items` holds
    ``frames / rate`` exactly, so it plans the same segments as probing). Files are read in this
    thread until reading them proves slow (more than ``LATENCY_BOUND_S`` a file: a network
    filesystem or an object store), then by ``workers`` threads, which overlap that waiting
    (libsndfile and the reads run without the GIL). On a local disk a header takes ~70 us, mostly
    Python, and threads made it ~2.5x slower (20 000 flac files, 2 cores). Tar members are read
    in this thread: their tar is read once and cached, and threads on one tar would each read it."""
    out: list[float | AudioError | None] = [None] * len(items)
    files = []
    for k, it in enumerate(items):
        if it.error is not None:
            out[k] = AudioError(it.error)
        elif it.duration is not None:
            out[k] = it.duration
        elif it.member is not None:
            out[k] = _probe(it, storage_options)
        else:
            files.append(k)
    trial = files[: max(8, 4 * workers)]
    t0 = time.perf_counter()
    for k in trial:
        out[k] = _probe(items[k], storage_options)
    rest = files[len(trial) :]
    slow = trial and (time.perf_counter() - t0) / len(trial) > LATENCY_BOUND_S
    if not (slow and workers > 1):
        for k in rest:
            out[k] = _probe(items[k], storage_options)
        return out  # type: ignore[return-value]
    with ThreadPoolExecutor(workers, thread_name_prefix="audistill-probe") as pool:
        for k, r in zip(
            rest,
            pool.map(lambda k: _probe(items[k], storage_options), rest, chunksize=16),
            strict=True,
        ):
            out[k] = r
    return out  # type: ignore[return-value]


def iter_segments(
    items: Iterable[Item],
    errors: list[dict],
    max_seconds: float = 30.0,
    min_seconds: float = 0.1,
    storage_options: dict | None = None,
    probe_workers: int = 16,
    chunk: int = 4096,
) -> Iterator[SegmentRef]:
    """Segments of every item, in order, streamed (items are probed ``chunk`` at a time); an
    error record is appended to ``errors`` for every unusable item and repeated segment."""
    if max_seconds <= min_seconds:
        raise CorpusError(
            f"segments of at most {max_seconds:g} s, each under the shortest kept ({min_seconds:g} "
            "s): "
            "every one would be dropped"
        )
    seen: set[int] = (
        set()
    )  # 16-byte digests of the ids yielded: ~70 bytes a segment, not ~110 for the id
    probed, took = 0, 0.0
    for part in _chunks(items, chunk):
        t0 = time.perf_counter()
        lengths = probe_lengths(part, storage_options, probe_workers)
        took += time.perf_counter() - t0
        probed += sum(1 for it in part if it.duration is None)
        for item, got in zip(part, lengths, strict=True):
            try:
                if isinstance(got, AudioError):
                    raise got
                segs = split_item(item, got, max_seconds, min_seconds)
            except AudioError as e:
                errors.append(item_error(item, str(e)))
                continue
            for s in segs:
                key = int.from_bytes(
                    hashlib.blake2b(s.id.encode(), digest_size=16).digest(), "little"
                )
                if key in seen:
                    errors.append(
                        error_record(s.id, s.path, "duplicate segment (same source and offsets)")
                    )
                    continue
                seen.add(key)
                yield s
    if took > SLOW_PROBE_S:
        log.warning(
            "read the length of %d files in %.0f s before planning; every run and slice does this "
            "again - `audistill manifest` writes it into a manifest once",
            probed,
            took,
        )


def _chunks(items: Iterable[Item], n: int) -> Iterator[list[Item]]:
    part: list[Item] = []
    for it in items:
        part.append(it)
        if len(part) >= n:
            yield part
            part = []
    if part:
        yield part


def plan_segments(
    items: Iterable[Item],
    max_seconds: float = 30.0,
    min_seconds: float = 0.1,
    storage_options: dict | None = None,
    probe_workers: int = 16,
) -> tuple[list[SegmentRef], list[dict]]:
    """Segments of every item (reading headers only, unless declared) and error records for
    unusable items, as lists (:func:`iter_segments` streams them)."""
    errors: list[dict] = []
    segs = list(
        iter_segments(items, errors, max_seconds, min_seconds, storage_options, probe_workers)
    )
    return segs, errors


def probe_items(
    items: list[Item], storage_options: dict | None = None, workers: int = 16
) -> tuple[list[Item], list[dict]]:
    """``items`` with their ``duration`` read from the files, and an error record for each one
    that cannot be read. An unreadable item stays, without a duration: extraction probes it
    again and records it in the bank's errors, so a manifest never drops a file silently."""
    out, errors = [], []
    for it, got in zip(items, probe_lengths(items, storage_options, workers), strict=True):
        if isinstance(got, AudioError):
            out.append(it)
            errors.append(item_error(it, str(got)))
        else:
            out.append(replace(it, duration=got))
    return out, errors


def manifest_row(
    item: Item, manifest_dir: str | Path | None = None, allow_outside_root: bool = False
) -> dict:
    """``item`` as a manifest row; a local path relative to ``manifest_dir`` (where the manifest
    is written, which :func:`scan_inputs` resolves it against), so the corpus and its manifest
    can move together. A path outside ``manifest_dir`` is refused unless allowed (planning
    from the manifest would refuse it)."""
    row = item.to_row()
    if manifest_dir is not None and not is_url(item.path):
        row["path"] = os.path.relpath(
            Path(item.path.removeprefix("file://")).absolute(), Path(manifest_dir).absolute()
        )
        if not allow_outside_root and (
            row["path"] == ".." or row["path"].startswith(".." + os.sep)
        ):
            raise CorpusError(
                f"{item.path} is outside {manifest_dir}, where the manifest goes: write it in a "
                "folder "
                "that holds the audio, or pass --allow-outside-root"
            )
    return row


def write_manifest(
    inputs: list[str],
    out: str | Path,
    domain: str = "unknown",
    domain_map: dict[str, str] | None = None,
    dataset: str = "",
    storage_options: dict | None = None,
    probe_workers: int = 16,
    chunk: int = 4096,
    allow_outside_root: bool = False,
) -> dict:
    """Probe every item of ``inputs`` once and write them, with durations, as a JSONL manifest at
    ``out`` (streamed; written under a temporary name and renamed, so a killed run leaves no
    manifest that looks complete). Returns items, hours, the unreadable ones' error records."""
    out = Path(out)
    if out.suffix != ".jsonl":
        raise CorpusError(f"manifest {out}: write it as .jsonl")
    items = iter_items(inputs, domain, domain_map, dataset, storage_options, allow_outside_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    count, seconds, errors = 0, 0.0, []
    try:
        with open(tmp, "w") as f:
            for part in _chunks(items, chunk):
                done, errs = probe_items(part, storage_options, probe_workers)
                errors += errs
                for it in done:
                    f.write(json.dumps(manifest_row(it, out.parent, allow_outside_root)) + "\n")
                    count += 1
                    seconds += it.duration or 0.0
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "manifest": str(out),
        "items": count,
        "hours": seconds / 3600,
        "unreadable": len(errors),
        "errors": errors,
    }
