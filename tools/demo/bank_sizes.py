"""What a bank's bytes are: audio, teacher features, the fitted codec states a reader needs to
decode them, and the rest (indexes, catalog, statistics) - and bits per value that count
everything decoding needs."""

from __future__ import annotations

from audistill.shards.bank import Bank
from audistill.shards.info import layer_bytes


def bank_sizes(root: str | Bank) -> dict:
    """Bytes by kind, and per teacher layer the codec's stored bytes, its fitted state's bytes
    and the bits per value with and without that state."""
    bank = root if isinstance(root, Bank) else Bank.open(str(root))
    cat = bank.catalog
    audio = sum(
        f.bytes or 0 for s in cat.shards.values() for f in s.fields.values() if f.teacher is None
    )
    features = sum(
        f.bytes or 0
        for s in cat.shards.values()
        for f in s.fields.values()
        if f.teacher is not None
    )
    codes = layer_bytes(bank)
    layers, state_total = {}, 0
    for t in cat.teachers.values():
        for layer in t.layers:
            ref = t.codec_state.get(str(layer))
            state = bank.fs.size(ref["path"]) if ref else 0
            state_total += state
            frames = sum(
                f.num_frames
                for s in cat.shards.values()
                for f in s.teacher_fields(t.name)
                if layer in f.layers
            )
            values = frames * t.dim
            code = codes.get((t.name, layer), 0)
            layers[f"{t.name}/L{layer}"] = {
                "values": values,
                "code_bytes": code,
                "state_bytes": state,
                "bits_per_value_codes": 8 * code / values if values else None,
                "bits_per_value": 8 * (code + state) / values if values else None,
            }
    values = sum(v["values"] for v in layers.values())
    code_total = sum(v["code_bytes"] for v in layers.values())
    shards_total = sum(s.bytes for s in cat.shards.values())
    return {
        "audio_bytes": audio,
        "feature_bytes": features,
        "codec_state_bytes": state_total,
        "shard_other_bytes": shards_total - audio - features,
        "values": values,
        "code_bytes": code_total,
        "bits_per_value_codes": 8 * code_total / values if values else None,
        "bits_per_value": 8 * (code_total + state_total) / values if values else None,
        "layers": layers,
    }
