"""Copy a bank - whole (``convert`` to the other layout) or a subset (``export`` only the teachers
and layers one student needs). Stored codec parts are copied as they are, never decoded and
re-encoded, so both operations are exact whatever the codec."""

from __future__ import annotations

from collections.abc import Callable

from .bank import Bank
from .errors import CatalogError, MissingDataError
from .fields import AUDIO
from .reader import BankReader


def copy_bank(src: str | Bank, dst: str, *, layout: str | None = None,
              teachers: dict[str, list[int] | None] | None = None,
              src_options: dict | None = None, dst_options: dict | None = None,
              progress: Callable[[str], None] | None = None) -> Bank:
    """Copy ``src`` into a new bank at ``dst`` (same layout unless ``layout`` is given).

    ``teachers``: ``{name: [layers] | None}`` to keep (None = every kept layer); ``None`` keeps
    every teacher. Shards already committed at ``dst`` are skipped, so an interrupted copy
    resumes where it stopped.
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
    target.catalog.stats.update({t: {str(k): v for k, v in source.catalog.stats.get(t, {}).items()
                                     if int(k) in wanted[t]} for t in wanted if t in source.catalog.stats})
    target.catalog.config.setdefault("copied_from", []).append({"bank": source.root, "teachers": wanted})
    target.save_catalog()
    for shard in reader.shards:
        if target.is_committed(shard):
            continue
        if progress:
            progress(shard)
        _copy_shard(reader, target, shard, wanted)
    return target


def _copy_shard(reader: BankReader, target: Bank, shard: str, wanted: dict[str, list[int]]) -> None:
    r = reader.reader(shard)
    rec = reader.bank.catalog.shards[shard]
    fields = {(f.teacher, lay): f.name for f in rec.fields.values() if f.teacher for lay in f.layers}
    with target.write_shard(shard, wanted) as w:
        for i, seg in enumerate(r.segments):
            feats: dict[str, dict | None] = {}
            for teacher, layers in wanted.items():
                names = {fields[(teacher, lay)] for lay in layers}
                if not all(r.covered(f, i) for f in names):
                    if any(r.covered(f, i) for f in names):
                        raise MissingDataError(f"shard {shard!r} segment {seg.id!r}: teacher {teacher!r} "
                                               "covers it in some of its fields only")
                    feats[teacher] = None
                    continue
                feats[teacher] = {lay: r.read_parts(fields[(teacher, lay)], lay, i) for lay in layers}
            w.add(seg, r.read_audio(i), feats)


_ = AUDIO
