"""Run loaded teachers over given waves the public way - ``extract()`` into a bank - and read each
wave's features back (the pipeline's batching, grouping and out-of-memory splitting included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audistill.extract.run import ExtractConfig, RunSummary, extract
from audistill.shards.reader import BankReader


def exact_waves(wave: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
    """Each item of ``wave`` (B, N) cut to its length and rounded to 16-bit samples: what a 16 kHz
    PCM wav file holds and decodes back to exactly."""
    q = (wave * 32768).round().clamp(-32768, 32767) / 32768
    return [q[b, : int(n)].numpy().astype(np.float32) for b, n in enumerate(lengths.tolist())]


def bank_features(
    teacher, waves: list[np.ndarray], root: Path, **cfg
) -> tuple[list[dict[int, np.ndarray]], RunSummary]:
    """``teacher``'s features of every wave (float32 at 16 kHz, 16-bit exact), read back from a bank
    that ``extract`` wrote with ``teacher`` (one shard, one batch unless ``cfg`` says otherwise)."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i, w in enumerate(waves):
        sf.write(corpus / f"item{i:02d}.wav", w, 16000, subtype="PCM_16")
    longest = max(len(w) for w in waves) / 16000
    base = dict(
        max_seconds=longest + 0.5,
        shard_seconds=3600.0,
        loader_workers=0,
        batch_seconds=len(waves) * (longest + 0.5),
        device=str(teacher.device),
    )
    s = extract(
        [str(corpus)],
        [teacher.spec],
        str(root / "bank"),
        ExtractConfig(**{**base, **cfg}),
        teachers=[teacher],
    )
    feats = {
        sd.segment.source: sd.features.get(teacher.name) for sd in BankReader(str(root / "bank"))
    }
    return [feats.get(f"corpus/item{i:02d}.wav") for i in range(len(waves))], s


def check_batched_equals_single(
    teacher, wave: torch.Tensor, lengths: torch.Tensor, root: Path, atol: float
) -> tuple[list[dict[int, np.ndarray]], RunSummary]:
    """``teacher``'s features of every item of ``wave`` (B, N) batched through a bank (under
    ``root``) equal its features of that item alone; returns what the bank gave back."""
    waves = exact_waves(wave, lengths)
    parts, summary = bank_features(teacher, waves, root)
    for b, w in enumerate(waves):
        feats, flen = teacher.extract(torch.from_numpy(w)[None], torch.tensor([len(w)]))
        assert int(flen[0]) == teacher.num_frames(len(w))
        for layer in teacher.layers:
            np.testing.assert_allclose(
                parts[b][layer], feats[layer][0, : int(flen[0])].numpy(), atol=atol, rtol=1e-3
            )
    return parts, summary
