"""The bank loader: random aligned crops, batches by total seconds, deterministic and resumable.

Scheme (no sample lost or repeated, whatever the shard count):

1. Per epoch a *global plan* is built from the catalog's segment lists only (no feature is read):
   shards in an order shuffled with ``(seed, epoch)``, each shard's segments in order, one crop
   per segment (start a multiple of ``align_hop`` samples, drawn from the same generator), then a
   shuffle buffer of ``shuffle_buffer`` items. Every rank computes the same plan.
2. The plan is cut into *global batches* of at least ``batch_seconds`` of audio and at least
   ``world * accum`` items (a short tail joins the batch before it).
3. Item ``i`` of a global batch goes to micro-batch ``i % (world * accum)``; micro-batch
   ``rank * accum + a`` is rank's ``a``-th accumulation step. So the split is at the item level:
   every item goes to exactly one (rank, micro-batch) even when shards don't divide evenly.
4. The loader streams epoch after epoch without restarting its workers: the k-th micro-batch it
   yields (counting from where it started) is made by worker ``k % num_workers``, so the
   DataLoader's round-robin returns them in plan order. Each batch carries ``(epoch, index)``;
   resuming = building the same plans and starting after the last consumed ``(epoch, index)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numcodecs
import numpy as np
import torch

from audistill.shards.reader import BankReader
from audistill.shards.segments import SAMPLE_RATE

from .augment import Augment


@dataclass(frozen=True)
class Item:
    shard: str
    index: int
    start: int  # first sample of the crop
    num: int  # samples in the crop
    domain: str
    uid: int  # position in the epoch's plan (seeds augmentation)


def crop_length(crop_seconds: float, align_hop: int) -> int:
    return max(align_hop, int(crop_seconds * SAMPLE_RATE) // align_hop * align_hop)


def epoch_items(
    segments: dict[str, list],
    crop_samples: int,
    align_hop: int,
    seed: int,
    epoch: int,
    shuffle_buffer: int,
) -> list[Item]:
    """The epoch's items in order: shuffled shards, aligned random crops, a shuffle buffer."""
    rng = np.random.default_rng([seed, epoch, 7])
    names = sorted(segments)
    order = [names[i] for i in rng.permutation(len(names))]
    stream = []
    for s in order:
        for i, seg in enumerate(segments[s]):
            n = int(seg.num_samples)
            if n > crop_samples:
                start = int(rng.integers(0, (n - crop_samples) // align_hop + 1)) * align_hop
                num = crop_samples
            else:
                start, num = 0, n
            stream.append((s, i, start, num, seg.domain))
    out, buf = [], []
    for x in stream:
        buf.append(x)
        if len(buf) >= shuffle_buffer:
            out.append(buf.pop(int(rng.integers(len(buf)))))
    while buf:
        out.append(buf.pop(int(rng.integers(len(buf)))))
    return [Item(*x, uid=k) for k, x in enumerate(out)]


def global_batches(items: list[Item], batch_seconds: float, min_items: int) -> list[list[Item]]:
    out, cur, secs = [], [], 0.0
    for it in items:
        cur.append(it)
        secs += it.num / SAMPLE_RATE
        if secs >= batch_seconds and len(cur) >= min_items:
            out.append(cur)
            cur, secs = [], 0.0
    if cur:
        if len(cur) < min_items and out:
            out[-1].extend(cur)
        else:
            out.append(cur)
    return out


def rank_micro_batches(
    batches: list[list[Item]], rank: int, world: int, accum: int
) -> list[tuple[list[Item], int]]:
    """Rank's micro-batches in order (step s, accumulation a -> index s * accum + a), each with
    the item count of its global batch (the loss normalizer)."""
    parts = world * accum
    return [(b[(rank * accum + a) :: parts], len(b)) for b in batches for a in range(accum)]


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a worker needs to rebuild the plan (plain values: picklable for workers)."""

    root: str
    teachers: dict  # {name: [layers]} read from the bank; {} for online mode
    shards: tuple
    crop_samples: int
    align_hop: int
    batch_seconds: float
    shuffle_buffer: int
    seed: int
    rank: int = 0
    world: int = 1
    accum: int = 1
    storage_options: dict | None = None
    full_audio: bool = (
        False  # online mode: the whole segment's audio, the crop applied after the teacher
    )
    augment: dict | None = None
    readahead_chunks: int | None = (
        None  # Zarr read-ahead window in chunks (None: the reader's default)
    )
    max_open_shards: int = (
        4  # shard readers kept open per worker (their windows hold decoded chunks)
    )


def plan(spec: LoaderSpec, epoch: int, segments: dict[str, list]) -> list[tuple[list[Item], int]]:
    items = epoch_items(
        segments, spec.crop_samples, spec.align_hop, spec.seed, epoch, spec.shuffle_buffer
    )
    batches = global_batches(items, spec.batch_seconds, spec.world * spec.accum)
    return rank_micro_batches(batches, spec.rank, spec.world, spec.accum)


def catalog_segments(reader: BankReader) -> dict[str, list]:
    return {s: reader.segments(s) for s in reader.shards}


class BankBatches(torch.utils.data.IterableDataset):
    """This rank's micro-batches from ``(epoch, start)`` on, for ``epochs`` epochs (None:
    endless)."""

    def __init__(self, spec: LoaderSpec, epoch: int, start: int = 0, epochs: int | None = 1):
        super().__init__()
        self.spec, self.epoch, self.start, self.epochs = spec, epoch, start, epochs
        self._reader: BankReader | None = None
        self._open: OrderedDict[str, None] = OrderedDict()  # shard readers open, least recent first
        self._segments: dict[str, list] | None = None

    def __getstate__(self) -> dict:  # workers open their own reader
        return {**self.__dict__, "_reader": None, "_open": OrderedDict(), "_segments": None}

    def reader(self) -> BankReader:
        if self._reader is None:
            s = self.spec
            self._reader = BankReader(
                s.root,
                teachers=s.teachers,
                shards=list(s.shards),
                storage_options=s.storage_options,
            )
        return self._reader

    def micro_batches(self, epoch: int | None = None) -> list[tuple[list[Item], int]]:
        if self._segments is None:  # committed shards never change: read their segment lists once
            self._segments = catalog_segments(self.reader())
            for shard in self.reader().shards:  # listing opened them all; keep only the LRU's
                if shard not in self._open:
                    self.reader().release(shard)
        return plan(self.spec, self.epoch if epoch is None else epoch, self._segments)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        aug = Augment.from_dict(self.spec.augment) if self.spec.augment else None
        if info is not None:
            numcodecs.blosc.use_threads = False  # parallelism comes from the workers
        k, e = 0, self.epoch
        while self.epochs is None or e < self.epoch + self.epochs:
            mbs = self.micro_batches(e)
            if not mbs:
                return
            for j in range(self.start if e == self.epoch else 0, len(mbs)):
                if k % nw == wid:
                    items, global_items = mbs[j]
                    yield {
                        **self.collate(e, j, items, aug),
                        "global_items": global_items,
                        "epoch_batches": len(mbs),
                    }
                k += 1
            e += 1

    def open_shard(self, shard: str, keep: set[str] = frozenset()) -> None:
        """Open (or reuse) a shard reader with a small read-ahead window; at most
        ``max_open_shards`` stay open (more only while one micro-batch needs them: ``keep``), the
        least recently used is closed first, so memory stays bounded whatever the bank's size
        (windows of decoded chunks live in each shard reader)."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return
        for old in [s for s in self._open if s not in keep][
            : max(0, len(self._open) + 1 - self.spec.max_open_shards)
        ]:
            del self._open[old]
            self.reader().release(old)
        sr = self.reader().reader(shard)
        if self.spec.readahead_chunks is not None and hasattr(sr, "readahead"):
            sr.readahead = self.spec.readahead_chunks
        self._open[shard] = None

    def collate(self, epoch: int, j: int, items: list[Item], aug: Augment | None) -> dict:
        """One micro-batch: audio and every teacher's target frames, read in shard order and decoded
        straight into the batch's tensors (targets in the codec's exact dtype: float16 banks give
        float16 targets, the same values in half the bytes)."""
        r = self.reader()
        order = sorted(
            range(len(items)), key=lambda k: (items[k].shard, items[k].index)
        )  # read in shard order
        keep = {it.shard for it in items}
        # the teachers' frames always cover the crop; in full_audio mode (online teachers) the
        # audio is the whole segment, cropped after the teachers ran
        crops = [(it.start, it.num) for it in items]
        audio_crops = [None if self.spec.full_audio else c for c in crops]
        audio, windows = (
            [None] * len(items),
            {name: [None] * len(items) for name in self.spec.teachers},
        )
        for k in order:
            it = items[k]
            self.open_shard(it.shard, keep)
            audio[k] = r.read_audio(it.shard, it.index, audio_crops[k])
            for name in self.spec.teachers:
                windows[name][k] = r.frame_window(it.shard, it.index, name, crops[k])
        waves = (
            [a[it.start : it.start + it.num] for a, it in zip(audio, items, strict=True)]
            if self.spec.full_audio
            else audio
        )
        augment = (
            None
            if aug is None
            else (
                lambda b, x: aug(
                    x, np.random.default_rng([self.spec.seed, epoch, items[b].uid, 11])
                )
            )
        )
        wave, lengths = pad_pcm(waves, augment)
        out = {
            "epoch": epoch,
            "index": j,
            "wave": wave,
            "lengths": lengths,
            "domains": [it.domain for it in items],
            "ids": [r.segments(it.shard)[it.index].id for it in items],
            "targets": {},
            "target_lengths": {},
            "present": {},
        }
        if self.spec.full_audio:
            fw, flen = pad_pcm(audio)
            out.update(
                full_wave=fw, full_lengths=flen, crop_start=torch.tensor([it.start for it in items])
            )
        for name, layers in self.spec.teachers.items():
            feats = self.read_teacher(name, layers, items, order, crops, windows[name], keep)
            out["targets"][name] = feats
            out["target_lengths"][name] = torch.tensor(
                [0 if w is None else w[1] for w in windows[name]]
            )
            out["present"][name] = torch.tensor([w is not None for w in windows[name]])
        return out

    def read_teacher(
        self,
        name: str,
        layers: list[int],
        items: list[Item],
        order: list[int],
        crops: list,
        windows: list,
        keep: set[str],
    ) -> dict[int, torch.Tensor]:
        """Zero-padded ``{layer: (B, T, D)}`` of one teacher, each item decoded into its row; a
        segment the teacher skipped is zeros (T is at least 1, D is 1 when no item has it)."""
        r = self.reader()
        dim = r.bank.catalog.teachers[name].dim if any(w is not None for w in windows) else 1
        t = max([1] + [w[1] for w in windows if w is not None])
        dtype = TORCH_DTYPES[r.decoded_dtype(name)]
        feats = {}
        for layer in layers:
            z = feats[layer] = batch_tensor((len(items), t, dim), dtype)  # (B, T, D), written once
            rows = numpy_view(z)
            for k in order:
                n = 0
                if windows[k] is not None:
                    it = items[k]
                    self.open_shard(it.shard, keep)
                    n = r.read_layer_into(it.shard, it.index, name, layer, crops[k], rows[k])
                rows[k, n:] = 0
        return feats


TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor; inside a loader worker it is made in shared memory, as torch's
    ``default_collate`` makes its batches, so it crosses to the trainer without the copy (and
    the page faults) that pickling a private tensor into shared memory costs."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def numpy_view(t: torch.Tensor) -> np.ndarray:
    """A numpy array sharing ``t``'s memory (bfloat16 as its raw bits, uint16)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def pad_pcm(pcm: list[np.ndarray], fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """int16 segments as one zero-padded float batch ``(B, N)`` in [-1, 1) and their lengths;
    ``fn(b, x)`` (e.g. augmentation) transforms item ``b`` first."""
    lengths = torch.tensor([len(a) for a in pcm], dtype=torch.long)
    wave = batch_tensor((len(pcm), int(lengths.max())), torch.float32)
    for b, a in enumerate(pcm):
        x = torch.from_numpy(a.astype(np.float32) / 32768.0)
        if fn is not None:
            x = fn(b, x)
        wave[b, : len(x)] = x
        wave[b, len(x) :] = 0
    return wave, lengths


def make_loader(
    spec: LoaderSpec,
    epoch: int,
    start: int,
    num_workers: int,
    prefetch: int,
    pin: bool,
    epochs: int | None = 1,
):
    ds = BankBatches(spec, epoch, start, epochs)
    kw = {"prefetch_factor": prefetch, "persistent_workers": False} if num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=num_workers, pin_memory=pin, **kw
    )


def num_micro_batches(spec: LoaderSpec, epoch: int, reader: BankReader) -> int:
    return len(plan(spec, epoch, catalog_segments(reader)))


def lcm(*xs: int) -> int:
    out = 1
    for x in xs:
        out = out * x // math.gcd(out, x)
    return out
