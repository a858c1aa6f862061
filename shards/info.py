"""What a bank holds, in numbers a user checks: hours per domain, segments, bytes, and the
measured bits per stored value of every teacher layer (stored bytes / (frames x dim))."""

from __future__ import annotations

from .bank import Bank
from .catalog import SCHEMA_VERSION


def layer_bytes(bank: Bank) -> dict[tuple[str, int], int]:
    """Stored bytes per (teacher, layer), summed over shards (compressed codec parts)."""
    out: dict[tuple[str, int], int] = {}
    for name, rec in bank.catalog.shards.items():
        for f in rec.fields.values():
            if f.teacher is None:
                continue
            per = f.layer_bytes
            if per is None:  # a schema-1 record that did not count them: read them from the shard
                per = bank.layout_of(rec).layer_bytes_stored(bank.fs, name, f.name, f.layers)
            for layer in f.layers:
                out[(f.teacher, layer)] = out.get((f.teacher, layer), 0) + int(
                    per.get(str(layer), 0)
                )
    return out


def bank_info(root: str | Bank, storage_options: dict | None = None) -> dict:
    bank = root if isinstance(root, Bank) else Bank.open(root, storage_options)
    cat = bank.catalog
    lbytes = layer_bytes(bank)
    teachers = {}
    for t in cat.teachers.values():
        covered = sum(
            max((f.num_covered for f in s.teacher_fields(t.name)), default=0)
            for s in cat.shards.values()
        )
        layers = {}
        for layer in t.layers:
            lf = sum(
                f.num_frames
                for s in cat.shards.values()
                for f in s.teacher_fields(t.name)
                if layer in f.layers
            )
            b = lbytes.get((t.name, layer), 0)
            values = lf * t.dim
            layers[str(layer)] = {
                "frames": lf,
                "bytes": b,
                "bits_per_value": (8 * b / values) if values else None,
            }
        teachers[t.name] = {
            "source": t.source,
            "revision": t.revision,
            "fingerprint": t.fingerprint,
            "codec": t.codec,
            "dim": t.dim,
            "frame_rate": t.frame_rate,
            "num_layers": t.num_layers,
            "layers_kept": t.layers,
            "home_domain": t.home_domain,
            "domains": t.domains or ["all"],
            "segments_covered": covered,
            "layers": layers,
        }
    spd = cat.seconds_per_domain()
    return {
        "bank": bank.root,
        "layout": cat.layout,
        "schema_version": SCHEMA_VERSION,
        "shards": len(cat.shards),
        "segments": cat.num_segments,
        "bytes": cat.bytes,
        "hours_per_domain": {d: s / 3600 for d, s in sorted(spd.items())},
        "hours": sum(spd.values()) / 3600,
        "teachers": teachers,
        "stats_layers": {t: sorted(int(x) for x in v) for t, v in cat.stats.items()},
    }
