"""Batches by total duration with length bucketing, decoding in worker processes, padding.

Within a shard, segments are sorted by length (longest first) and packed while
``batch_size * longest <= batch_samples``, so a batch holds segments of similar length and
little padding. Decoding happens in ``torch.utils.data.DataLoader`` worker processes while the
main process runs the teachers on the previous batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from audistill.shards.segments import SAMPLE_RATE

from .audio import load_segment, to_int16
from .errors import AudioError
from .plan import ShardPlan


def make_batches(lengths: list[int], batch_samples: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size fits ``batch_samples``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > batch_samples or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def equal_length_groups(lengths: list[int]) -> list[list[int]]:
    """Positions grouped by identical length (for teachers that are not padding-invariant)."""
    groups: dict[int, list[int]] = {}
    for pos, n in enumerate(lengths):
        groups.setdefault(n, []).append(pos)
    return list(groups.values())


def pad_batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()))  # (B, N)
    for b, w in enumerate(waves):
        out[b, : len(w)] = torch.from_numpy(w)
    return out, lengths


@dataclass
class Decoded:
    """One decoded batch, padded in the worker: positions in the run's shard list and shard."""

    shard: int
    indices: list[int]  # every shard index of the batch (decoded or failed)
    ok: list[int]  # shard indices that decoded, in the order of ``wave``'s rows
    wave: torch.Tensor | None  # (B, N) float32 16 kHz, zero-padded
    lengths: torch.Tensor | None  # (B,)
    # (B, N) int16, rows as ``wave``'s: the audio the bank stores. A tensor, so it travels from the
    # decode workers (and on to writer processes) as shared memory, not as pickled bytes.
    pcm: torch.Tensor | None
    failures: dict[int, str]  # shard index -> reason

    def pin_memory(self) -> Decoded:
        if self.wave is not None:
            self.wave = self.wave.pin_memory()
        return self

    @property
    def seconds(self) -> float:
        return 0.0 if self.lengths is None else float(self.lengths.sum()) / SAMPLE_RATE


class _BatchDataset(Dataset):
    def __init__(
        self,
        shards: list[ShardPlan],
        work: list[tuple[int, list[int]]],
        min_samples: int,
        storage_options: dict | None,
        max_samples: int | None = None,
    ):
        self.shards, self.min_samples, self.so = shards, min_samples, storage_options
        self.max_samples = max_samples
        # the batches as flat arrays, not a list of lists of ints: forked decode workers read them
        # without touching (and so copying) a Python object per segment
        self.shard_of = np.array([si for si, _ in work], dtype=np.int64)
        self.ends = np.cumsum([len(idx) for _, idx in work], dtype=np.int64)
        self.flat = np.array([i for _, idx in work for i in idx], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.shard_of)

    def __getitem__(self, k: int) -> Decoded:
        si = int(self.shard_of[k])
        idx = self.flat[(self.ends[k - 1] if k else 0) : self.ends[k]].tolist()
        waves, fails = {}, {}
        refs = self.shards[si].segments
        for i in idx:
            ref = refs[i]
            try:
                waves[i] = load_segment(
                    ref.path,
                    ref.member,
                    ref.start,
                    ref.end,
                    self.min_samples,
                    self.so,
                    self.max_samples,
                    ref.declared,
                )
            except AudioError as e:
                fails[i] = str(e)
        ok = [i for i in idx if i in waves]
        wave, lengths = pad_batch([waves[i] for i in ok]) if ok else (None, None)
        pcm = torch.from_numpy(to_int16(wave.numpy())) if ok else None  # padding stays 0
        return Decoded(si, idx, ok, wave, lengths, pcm, fails)


def _identity(x):
    return x


def batch_work(
    shards: list[ShardPlan], batch_samples: int, max_batch: int
) -> list[tuple[int, list[int]]]:
    """Every batch of a run, in shard order: (position of the shard in ``shards``, segment
    indices)."""
    return [
        (si, b)
        for si, sh in enumerate(shards)
        for b in make_batches([s.num_samples for s in sh.segments], batch_samples, max_batch)
    ]


def decoded_batches(
    shards: list[ShardPlan],
    work: list[tuple[int, list[int]]],
    min_samples: int,
    workers: int,
    storage_options: dict | None = None,
    pin_memory: bool = False,
    max_samples: int | None = None,
):
    """Yield :class:`Decoded` batches of ``work`` (:func:`batch_work`), in order, decoded
    ``workers`` ahead. Segments longer than ``max_samples`` fail (see :func:`load_segment`)."""
    ds = _BatchDataset(shards, work, min_samples, storage_options, max_samples)
    if workers <= 0:
        yield from (ds[k] for k in range(len(ds)))
        return
    loader = DataLoader(
        ds,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=4,
        multiprocessing_context="fork",
        pin_memory=pin_memory,
    )
    yield from loader
