"""Synthetic banks for benchmarks (and tests): audio made here, features from teacher objects.

A teacher object has the extraction registry's interface: ``record() -> TeacherRecord`` (its
catalog entry: layers, domains, codec) and ``extract(wave (B, N), lengths (B,)) -> ({layer:
(B, T, D)}, frame_lengths (B,))``; segments of domains its record excludes are skipped, as
extraction does.
"""

from __future__ import annotations

import numpy as np
import torch

from audistill.shards.bank import Bank
from audistill.shards.codecs import codec_from_record
from audistill.shards.segments import SAMPLE_RATE, Segment, make_segment_id

DOMAINS = ("speech", "music", "sound")


def synthetic_audio(num_samples: int, domain: str, rng: np.random.Generator) -> np.ndarray:
    """int16 audio: harmonic tones (music), chirpy formant-like tones (speech), noise bursts
    (sound)."""
    t = np.arange(num_samples) / SAMPLE_RATE
    if domain == "music":
        f0 = rng.uniform(110, 440)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
    elif domain == "speech":
        f = rng.uniform(100, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        x = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    else:
        x = rng.standard_normal(num_samples) * (
            rng.random(num_samples // 1600 + 1).repeat(1600)[:num_samples] > 0.5
        )
    x = x / (np.abs(x).max() + 1e-9) * 0.5 + 0.01 * rng.standard_normal(num_samples)
    return (x * 32767).clip(-32768, 32767).astype(np.int16)


@torch.no_grad()
def write_bank(
    root: str,
    teachers: list,
    num_shards: int = 2,
    segments_per_shard: int = 4,
    seconds: tuple[float, float] = (2.0, 4.0),
    layout: str = "zarr",
    domains: tuple[str, ...] = DOMAINS,
    seed: int = 0,
    device: str = "cpu",
    storage_options: dict | None = None,
    unique: int | None = None,
    cache: list | None = None,
) -> Bank:
    """A bank of ``num_shards`` shards named ``s000``... holding audio and every teacher's layers.

    ``unique``: only that many distinct segments are made and run through the teachers; later
    segments repeat them under new ids (a cheap way to make a bank 10x larger). ``cache``: a list
    that collects the segments made (and, when already filled, supplies them: no teacher runs)."""
    bank = Bank.create(root, layout=layout, storage_options=storage_options)
    recs = {t.name: t.record() for t in teachers}
    cods = {n: codec_from_record(r.codec) for n, r in recs.items()}
    for r in recs.values():
        bank.register_teacher(r)
    rng = np.random.default_rng(seed)
    k, made = 0, ([] if cache is None else cache)
    for s in range(num_shards):
        with bank.write_shard(f"s{s:03d}", teachers=[t.name for t in teachers]) as w:
            for _ in range(segments_per_shard):
                if unique is not None and (k >= unique or k < len(made)):
                    dom, audio, feats = made[k % unique]
                else:
                    dom, audio, feats = _make_one(
                        teachers, recs, cods, domains[k % len(domains)], seconds, rng, device
                    )
                    if unique is not None or cache is not None:
                        made.append((dom, audio, feats))
                n = len(audio)
                src = f"synthetic://{k}"
                seg = Segment(
                    make_segment_id(src, 0.0, n / SAMPLE_RATE),
                    src,
                    0.0,
                    n / SAMPLE_RATE,
                    domain=dom,
                    dataset="synthetic",
                    num_samples=n,
                )
                w.add(seg, audio, feats)
                k += 1
    return bank


def _make_one(teachers, recs, cods, dom: str, seconds, rng, device):
    n = int(rng.uniform(*seconds) * SAMPLE_RATE)
    audio = synthetic_audio(n, dom, rng)
    wave = torch.from_numpy(audio.astype(np.float32) / 32768).to(device)[None]
    feats = {}
    for t in teachers:
        doms = recs[t.name].domains
        if doms and dom not in doms:
            feats[t.name] = None
            continue
        out, fl = t.extract(wave, torch.tensor([n], device=device))
        feats[t.name] = {
            la: {
                k: v.cpu()
                for k, v in cods[t.name].encode(out[la][0, : int(fl[0])].float(), None).items()
            }
            for la in recs[t.name].layers
        }
    return dom, audio, feats
