"""Building tiny banks in tests."""

from __future__ import annotations

import numpy as np
import torch

from audistill.shards.bank import Bank
from audistill.shards.catalog import TeacherRecord
from audistill.shards.codecs import get_codec
from audistill.shards.segments import Segment, make_segment_id

from ..datagen import outlier_features

# (teacher, frame rate, dim, layers, home domain, domains it runs on)
TEACHERS = [
    ("speechy", 50.0, 12, [1, 2, 3], "speech", []),
    ("soundy", 25.0, 8, [2, 4], "sound", ["sound", "music"]),
]


def make_bank(
    root,
    layout: str,
    *,
    codec: str = "float32",
    shards: int = 2,
    per_shard: int = 4,
    seed: int = 0,
    storage_options=None,
    durations=None,
):
    """A bank with two teachers (one skipping speech) and the exact values written, by segment
    id."""
    rng = np.random.default_rng(seed)
    bank = Bank.create(str(root), layout, storage_options)
    codecs = {}
    for name, rate, dim, layers, home, domains in TEACHERS:
        c = get_codec(codec)
        codecs[name] = c
        bank.register_teacher(
            TeacherRecord(
                name=name,
                source=f"test/{name}",
                dim=dim,
                frame_rate=rate,
                codec=c.record(),
                layers=layers,
                num_layers=max(layers) + 1,
                revision="r1",
                fingerprint="f" * 64,
                home_domain=home,
                domains=domains,
            ),
            save=False,
        )
    states = {}
    for name, _, dim, layers, _, _ in TEACHERS:
        if codecs[name].needs_fit:
            for layer in layers:
                st = codecs[name].fit(outlier_features(rng, 512, dim))
                bank.save_codec_state(name, layer, st, save=False)
                states[(name, layer)] = st
    bank.save_catalog()
    truth = {}
    domains_cycle = ["speech", "music", "sound", "unknown"]
    k = 0
    for s in range(shards):
        with bank.write_shard(f"shard-{s:05d}", [t[0] for t in TEACHERS]) as w:
            for _ in range(per_shard):
                secs = durations[k % len(durations)] if durations else 0.5 + (k % 3) * 0.7
                n = int(round(secs * 16000))
                domain = domains_cycle[k % 4]
                src = f"/corpus/{domain}/clip {k}.wav"
                seg = Segment(make_segment_id(src), src, 0.0, secs, domain, "test", n)
                audio = rng.integers(-20000, 20000, n).astype(np.int16)
                feats, want = {}, {}
                for name, rate, dim, layers, _, run_on in TEACHERS:
                    if run_on and domain not in run_on:
                        feats[name] = None
                        continue
                    frames = n * int(rate) // 16000
                    enc, dec = {}, {}
                    for layer in layers:
                        x = outlier_features(rng, frames, dim) * (1 + layer)
                        st = states.get((name, layer))
                        tst = (
                            None if st is None else {a: torch.from_numpy(b) for a, b in st.items()}
                        )
                        parts = codecs[name].encode(torch.from_numpy(x), tst)
                        enc[layer] = parts
                        dec[layer] = codecs[name].decode({a: _np(b) for a, b in parts.items()}, st)
                    feats[name], want[name] = enc, dec
                w.add(seg, audio, feats)
                truth[seg.id] = (seg, audio, want)
                k += 1
    return bank, truth


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
