"""Copy a bank - whole (``convert`` to the other layout) or a subset (``export`` only the teachers
and layers one student needs). Stored codec parts are copied as they are, never decoded and
re-encoded, so both operations are exact whatever the codec."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .bank import Bank, CatalogSaver
from .catalog import ShardRecord
from .errors import CatalogError, MissingDataError
from .reader import BankReader, TeacherRequest, spread_order


def default_workers(*banks: Bank) -> int:
    """Shards copied at once: 8 when a side is an object store (each read or write is a request
    of tens of ms), else 2."""
    return 2 if all(b.fs.is_local for b in banks) else 8


def _copy_shards(
    source: Bank,
    teachers: TeacherRequest,
    target: Bank,
    shards: list[str],
    one: Callable[[BankReader, str], ShardRecord],
    workers: int | None,
    progress: Callable[[str], None] | None,
) -> None:
    """Run ``one(reader, shard)`` (which commits ``shard`` at ``target`` without touching its
    catalog) for every shard not committed there yet, ``workers`` at a time, each worker thread
    with a reader of its own. The catalog is merged as shards finish and saved now and then
    (every shard would cost O(shards^2) bytes) and at the end, also when one fails: shards are
    skipped by their commit records, so a re-run resumes where this one stopped."""
    target.sync_catalog()  # shards an interrupted copy committed after its last catalog save
    todo = [s for s in shards if s not in target.catalog.shards]
    local = threading.local()

    def run(shard: str) -> ShardRecord:
        reader = getattr(local, "reader", None)
        if reader is None:
            reader = local.reader = BankReader(
                source, teachers, audio=True, check="size", max_open_shards=1
            )
        try:
            return one(reader, shard)
        finally:
            reader.release(shard)

    saver = CatalogSaver(target)
    pool = ThreadPoolExecutor(workers or default_workers(source, target), thread_name_prefix="copy")
    futures = {s: pool.submit(run, s) for s in todo}
    try:
        for shard, fut in futures.items():
            target.catalog.shards[shard] = fut.result().slim()
            if progress:
                progress(shard)
            saver.maybe()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for shard, fut in futures.items():  # what finished beside a failure, too
            if (
                shard not in target.catalog.shards
                and fut.done()
                and not fut.cancelled()
                and fut.exception() is None
            ):
                target.catalog.shards[shard] = fut.result().slim()
        saver.save()


def _kept_stats(source: Bank, wanted: dict[str, list[int]]) -> dict[str, dict]:
    """The source's per-layer statistics of the teachers and layers a copy keeps."""
    stats = source.catalog.stats
    return {
        t: {str(k): v for k, v in stats[t].items() if int(k) in layers}
        for t, layers in wanted.items()
        if t in stats
    }


def copy_bank(
    src: str | Bank,
    dst: str,
    *,
    layout: str | None = None,
    teachers: dict[str, list[int] | None] | None = None,
    src_options: dict | None = None,
    dst_options: dict | None = None,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> Bank:
    """Copy ``src`` into a new bank at ``dst`` (same layout unless ``layout`` is given).

    ``teachers``: ``{name: [layers] | None}`` to keep (None = every kept layer); ``None`` keeps
    every teacher. Shards already committed at ``dst`` are skipped, so an interrupted copy
    resumes where it stopped. ``workers``: shards copied at once (default: :func:`default_workers`).
    """
    source = src if isinstance(src, Bank) else Bank.open(src, src_options)
    reader = BankReader(source, teachers, audio=True, check="size")
    wanted = reader.teachers  # validated: every teacher/layer exists in every shard
    target = Bank.create(dst, layout or source.layout, dst_options)
    if target.root.rstrip("/") == source.root.rstrip("/"):
        raise CatalogError("source and destination bank are the same")
    for name, layers in wanted.items():
        rec = source.catalog.teachers[name]
        sub = type(rec).from_json(rec.to_json())
        sub.layers = list(layers)
        sub.codec_state = {}
        target.register_teacher(sub, save=False)
        for layer in layers:
            state = source.load_codec_state(name, layer)
            if state is not None:
                target.save_codec_state(name, layer, state, save=False)
    target.catalog.stats.update(_kept_stats(source, wanted))
    target.catalog.config.setdefault("copied_from", []).append(
        {"bank": source.root, "teachers": wanted}
    )
    target.save_catalog()
    _copy_shards(
        source,
        wanted,
        target,
        reader.shards,
        lambda r, s: _copy_shard(r, target, s, wanted),
        workers,
        progress,
    )
    return target


def _copy_shard(
    reader: BankReader, target: Bank, shard: str, wanted: dict[str, list[int]]
) -> ShardRecord:
    r = reader.reader(shard)
    rec = reader.bank.catalog.shards[shard]
    fields = {
        (f.teacher, lay): f.name for f in rec.fields.values() if f.teacher for lay in f.layers
    }
    with target.write_shard(shard, wanted, update_catalog=False) as w:
        for i, seg in enumerate(r.segments):
            feats: dict[str, dict | None] = {}
            for teacher, layers in wanted.items():
                names = {fields[(teacher, lay)] for lay in layers}
                if not all(r.covered(f, i) for f in names):
                    if any(r.covered(f, i) for f in names):
                        raise MissingDataError(
                            f"shard {shard!r} segment {seg.id!r}: teacher {teacher!r} "
                            "covers it in some of its fields only"
                        )
                    feats[teacher] = None
                    continue
                feats[teacher] = {
                    lay: r.read_parts(fields[(teacher, lay)], lay, i) for lay in layers
                }
            w.add(seg, r.read_audio(i), feats)
    return w.record


def recode_bank(
    src: str | Bank,
    dst: str,
    codec: str,
    *,
    codec_config: dict | None = None,
    layout: str | None = None,
    teachers: dict[str, list[int] | None] | None = None,
    fit_frames: int = 20000,
    seed: int = 0,
    src_options: dict | None = None,
    dst_options: dict | None = None,
    progress: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> Bank:
    """Copy ``src`` to ``dst`` with every teacher layer re-encoded by another codec.

    Decodes the stored features and encodes them again (lossy codecs lose what they lose;
    from a float32 bank this equals encoding the teacher output directly). Fitted codecs are
    fitted per (teacher, layer) on up to ``fit_frames`` frames drawn deterministically from
    the bank.
    """
    import numpy as np
    import torch

    from .codecs import get_codec

    source = src if isinstance(src, Bank) else Bank.open(src, src_options)
    reader = BankReader(source, teachers, audio=True, check="size")
    wanted = reader.teachers
    new = get_codec(codec, **(codec_config or {}))
    target = Bank.create(dst, layout or source.layout, dst_options)
    states: dict[tuple[str, int], dict | None] = {}
    for name, layers in wanted.items():
        rec = type(source.catalog.teachers[name]).from_json(source.catalog.teachers[name].to_json())
        rec.layers, rec.codec, rec.codec_state = list(layers), new.record(), {}
        rec.extra = {**rec.extra, "recoded_from": source.catalog.teachers[name].codec}
        target.register_teacher(rec, save=False)
        for layer in layers:
            st = (
                new.fit(_sample_frames(reader, name, layer, fit_frames, seed))
                if new.needs_fit
                else None
            )
            if st:
                target.save_codec_state(name, layer, st, save=False)
            states[(name, layer)] = st
    target.catalog.stats.update(_kept_stats(source, wanted))
    target.catalog.config.setdefault("recoded_from", []).append(
        {"bank": source.root, "codec": new.record()}
    )
    target.save_catalog()
    tstates = {
        k: (None if v is None else {a: torch.from_numpy(np.asarray(b)) for a, b in v.items()})
        for k, v in states.items()
    }

    def one(r: BankReader, shard: str) -> ShardRecord:
        with target.write_shard(shard, wanted, update_catalog=False) as w:
            for sd in r.iter_shard(shard):
                feats = {
                    t: (
                        {
                            lay: new.encode(torch.tensor(x), tstates[(t, lay)])
                            for lay, x in sd.features[t].items()
                        }
                        if t in sd.features
                        else None
                    )
                    for t in wanted
                }
                w.add(sd.segment, sd.audio, feats)
        return w.record

    _copy_shards(source, wanted, target, reader.shards, one, workers, progress)
    return target


def _sample_frames(reader: BankReader, teacher: str, layer: int, limit: int, seed: int):
    """Up to ``limit`` frames of one layer, drawn deterministically from shards spread over the
    whole bank: shards are read in an order that halves the gaps between those read (0, n/2,
    n/4, 3n/4 ...) until 4 x ``limit`` frames are in - not the whole bank, which at 100 000
    shards would be a read of all of it to fit one codec."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chunks, total = [], 0
    sub = BankReader(reader.bank, {teacher: [layer]}, audio=False, check="none", max_open_shards=1)
    for k in spread_order(len(sub.shards)):
        for sd in sub.iter_shard(sub.shards[k]):
            x = sd.features.get(teacher, {}).get(layer)
            if x is not None and len(x):
                chunks.append(x)
                total += len(x)
        sub.release(sub.shards[k])
        if total >= 4 * limit:
            break
    if not chunks:
        raise MissingDataError(
            f"no frames of teacher {teacher!r} layer {layer} to fit the codec on"
        )
    allx = np.concatenate(chunks)
    if total > limit:
        allx = allx[np.sort(rng.choice(total, size=limit, replace=False))]
    return allx
