"""Teacher outputs -> codec parts per segment, encoded on the teacher's device, copied to host
while the device runs on.

Each kept layer of a batch ``(B, T, D)`` is encoded in one :meth:`Codec.encode_padded` call, which
also flags (on the device, without a sync) the items with a frame the codec refuses: NaN/Inf or
beyond its range. On CUDA the parts and flags are then copied into pinned host memory with
``non_blocking`` copies and an event is recorded, so the host can launch the next batch's forward
before it waits for this one (:meth:`Encoded.result`). On the CPU the same code runs synchronously.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from audistill.shards.codecs import Codec


class Encoded:
    """One teacher's encoded batch (or OOM-split group), on its way to host memory."""

    def __init__(self, codec: Codec, feats: dict[int, torch.Tensor], flen: list[int], states: dict[int, dict | None]):
        self.flen = flen
        device = next(iter(feats.values())).device if feats else torch.device("cpu")
        cuda = device.type == "cuda"
        parts, oks = {}, []
        for layer, x in feats.items():  # x: (B, T, D)
            parts[layer], ok = codec.encode_padded(x, flen, states.get(layer))
            oks.append(ok)
        ok = torch.stack(oks).all(0) if oks else torch.ones(len(flen), dtype=torch.bool)
        self.kinds = {p.name: p.kind for p in codec.parts(next(iter(feats.values())).shape[2])} if feats else {}
        self.host = {layer: {k: _to_host(v, cuda) for k, v in p.items()} for layer, p in parts.items()}
        self.ok = _to_host(ok, cuda)
        self.event = None
        if cuda:
            self.event = torch.cuda.Event()
            self.event.record()

    def result(self, mode: str = "arrays", blocks: HostBlocks | None = None) -> list[dict[int, dict] | None]:
        """Per item: ``{layer: {part: ...}}``, or None where the codec refused a frame. Waits for
        this batch's copies only. Never hands out views of the (reused) staging buffers.

        ``mode``: "arrays" - each item's own numpy copies (simple, but one copy per item and part
        under the GIL); "rows" - :class:`Rows` references into one copy of each batch part, made
        by torch without the GIL (for writer threads); "shared" - the same, with the batch copy in
        shared memory, so handing a shard to a writer process sends a file descriptor per batch
        part instead of pickled bytes (~1.3 ms per MB of main-process time).

        ``blocks`` (modes "rows" and "shared"): the host memory for the batch copies comes from
        this pool; the storages taken are listed in ``self.taken``, to be given back once the
        shard holding them is written."""
        t0 = time.perf_counter()
        if self.event is not None:
            self.event.synchronize()
        self.wait_s = time.perf_counter() - t0  # the host waited this long for the device
        ok = self.ok.tolist()
        self.taken: list[torch.UntypedStorage] = []
        if mode in ("rows", "shared"):
            shared = mode == "shared"
            host = {layer: {k: self._copy(v, shared, blocks) for k, v in p.items()} for layer, p in self.host.items()}
        else:
            host = {layer: {k: v.numpy() for k, v in p.items()} for layer, p in self.host.items()}
        out: list[dict | None] = []
        for b, n in enumerate(self.flen):
            if not ok[b]:
                out.append(None)
                continue
            m = {k: (n if kind == "frame" else None) for k, kind in self.kinds.items()}
            if mode != "arrays":
                out.append({layer: {k: Rows(v, b, m[k]) for k, v in p.items()} for layer, p in host.items()})
            else:
                out.append({layer: {k: np.array(v[b, :n] if m[k] is not None else v[b]) for k, v in p.items()}
                            for layer, p in host.items()})
        return out


    def _copy(self, v: torch.Tensor, shared: bool, blocks: HostBlocks | None) -> torch.Tensor:
        """``v`` out of the staging buffer (CUDA) - or as is on the CPU, where nothing is staged -
        into memory of its own, in shared memory when ``shared``."""
        if self.event is None and not shared:
            return v
        if blocks is not None and blocks.shared == shared:
            out, storage = blocks.take(tuple(v.shape), v.dtype)
            if storage is not None:
                self.taken.append(storage)
            return out.copy_(v)
        out = torch.empty(v.shape, dtype=v.dtype)
        return (out.share_memory_() if shared else out).copy_(v)


class HostBlocks:
    """Recycled host memory for the batch parts handed to shard writers.

    Copying a batch part out of the pinned staging buffer into fresh memory runs at ~1.4 GB/s
    (a page fault per 4 KiB page); into pages used before, at memcpy speed. A block is taken for
    one batch part and given back only when the shard holding it has been written, so a writer
    never reads a block that is being refilled. ``shared``: blocks live in shared memory (for
    writer processes, which receive a file descriptor instead of the bytes)."""

    GRAIN = 1 << 20  # block sizes are whole MiB

    def __init__(self, shared: bool, max_free: int = 64):
        self.shared, self.max_free = shared, max_free
        self.free: list[torch.UntypedStorage] = []
        self.lock = threading.Lock()
        self.allocated = 0  # blocks made (not reused), for tests and diagnostics

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.UntypedStorage | None]:
        """A tensor of ``shape`` on a free block (reused when one fits: at most twice the size),
        and the block, to give back later (None for an empty tensor)."""
        need = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        if need == 0:
            return torch.empty(shape, dtype=dtype), None
        with self.lock:
            fits = [s for s in self.free if need <= s.nbytes() <= 2 * need + self.GRAIN]
            storage = min(fits, key=lambda s: s.nbytes()) if fits else None
            if storage is not None:
                self.free.remove(storage)
        if storage is None:
            size = -(-need // self.GRAIN) * self.GRAIN
            storage = torch.UntypedStorage._new_shared(size) if self.shared else torch.UntypedStorage(size)
            self.allocated += 1
        return torch.empty(0, dtype=dtype).set_(storage, 0, shape), storage

    def give(self, storages: list[torch.UntypedStorage]) -> None:
        """Blocks whose shard is written: free for reuse (the largest ``max_free`` are kept)."""
        with self.lock:
            self.free.extend(storages)
            if len(self.free) > self.max_free:
                self.free.sort(key=lambda s: s.nbytes(), reverse=True)
                del self.free[self.max_free:]


class Rows:
    """Item ``b`` of a batch part: ``block[b, :n]`` (a frame part) or ``block[b]`` (a segment part).
    Every item of a batch refers to the same ``block`` object, so pickling a shard's items shares
    each block once."""

    __slots__ = ("block", "b", "n")

    def __init__(self, block: torch.Tensor, b: int, n: int | None):
        self.block, self.b, self.n = block, b, n

    def __getstate__(self):
        return self.block, self.b, self.n

    def __setstate__(self, state):
        self.block, self.b, self.n = state

    def array(self) -> np.ndarray:
        x = self.block[self.b] if self.n is None else self.block[self.b, : self.n]
        return x.numpy()


def materialize(feats: dict | None) -> dict | None:
    """``{teacher: {layer: {part: Rows | array}} | None}`` with every :class:`Rows` as an array."""
    if feats is None:
        return None
    return {t: None if f is None else {layer: {k: v.array() if isinstance(v, Rows) else v for k, v in p.items()}
                                       for layer, p in f.items()}
            for t, f in feats.items()}


def _to_host(x: torch.Tensor, cuda: bool) -> torch.Tensor:
    if not cuda:
        return x.detach()
    out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    return out.copy_(x.detach(), non_blocking=True)


def device_state(state: dict[str, np.ndarray] | None, device) -> dict[str, torch.Tensor] | None:
    if state is None:
        return None
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in state.items()}
