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

    def __init__(
        self,
        codec: Codec,
        feats: dict[int, torch.Tensor],
        flen: list[int],
        states: dict[int, dict | None],
    ):
        self.flen = flen
        first = next(iter(feats.values()), None)  # (B, T, D)
        cuda = first is not None and first.device.type == "cuda"
        parts, oks = {}, []
        for layer, x in feats.items():  # x: (B, T, D)
            parts[layer], ok = codec.encode_padded(x, flen, states.get(layer))
            oks.append(ok)
        ok = torch.stack(oks).all(0) if oks else torch.ones(len(flen), dtype=torch.bool)
        self.kinds = (
            {p.name: p.kind for p in codec.parts(first.shape[2])} if first is not None else {}
        )
        self.host = {
            layer: {k: _to_host(v, cuda) for k, v in p.items()} for layer, p in parts.items()
        }
        self.ok = _to_host(ok, cuda)
        self.event = None
        if cuda:
            self.event = torch.cuda.Event()
            self.event.record()

    def result(
        self, mode: str = "arrays", block: BatchBlock | None = None
    ) -> list[dict[int, dict] | None]:
        """Per item: ``{layer: {part: ...}}``, or None where the codec refused a frame. Waits for
        this batch's copies only. Never hands out views of the (reused) staging buffers.

        ``mode``: "arrays" - each item's own numpy copies (simple, but one copy per item and part
        under the GIL); "rows" - :class:`Rows` references into one copy of each batch part, made
        by torch without the GIL (for writer threads); "shared" - the same, with the batch copy in
        shared memory, so handing a shard to a writer process sends a file descriptor per batch
        instead of pickled bytes (~1.3 ms per MB of main-process time).

        ``block`` (modes "rows" and "shared", when :meth:`copy_bytes` is not 0): where the copies
        go - one :class:`BatchBlock` serves every teacher and group of a batch. Without one, a
        block of fresh memory is made."""
        t0 = time.perf_counter()
        if self.event is not None:
            self.event.synchronize()
        self.wait_s = time.perf_counter() - t0  # the host waited this long for the device
        ok = self.ok.tolist()
        host = self.host
        need = self.copy_bytes(mode)
        if need:
            block = block if block is not None else BatchBlock(None, mode == "shared", need)
            host = {
                layer: {k: block.carve(v) for k, v in p.items()} for layer, p in self.host.items()
            }
        out: list[dict | None] = []
        for b, n in enumerate(self.flen):
            if not ok[b]:
                out.append(None)
                continue
            m = {k: (n if kind == "frame" else None) for k, kind in self.kinds.items()}
            rows = {layer: {k: Rows(v, b, m[k]) for k, v in p.items()} for layer, p in host.items()}
            if mode == "arrays":  # own copies: nothing may point into the staging buffers
                rows = {
                    layer: {k: np.array(r.array()) for k, r in p.items()}
                    for layer, p in rows.items()
                }
            out.append(rows)
        return out

    def copy_bytes(self, mode: str) -> int:
        """Host bytes :meth:`result` copies its parts into in ``mode``: on CUDA (out of the reused
        staging buffers) or for writer processes (into shared memory); 0 when the parts are handed
        on as they are (the CPU, writer threads) or copied per item ("arrays")."""
        if mode == "arrays" or (self.event is None and mode != "shared"):
            return 0
        return sum(
            _aligned(v.numel() * v.element_size()) for p in self.host.values() for v in p.values()
        )


class BatchBlock:
    """One host block for the parts of a whole batch - every teacher and group - carved in turn:
    one take from :class:`HostBlocks` and, for writer processes, one shared-memory file
    descriptor per batch. ``recycled``: the storage came from ``blocks`` and must be given back
    once the shard holding the batch is written."""

    def __init__(self, blocks: HostBlocks | None, shared: bool, nbytes: int):
        pooled = blocks is not None and blocks.shared == shared
        self.storage = blocks.take(nbytes) if pooled else new_block(nbytes, shared)
        self.recycled = pooled and self.storage is not None
        self.at = 0

    def carve(self, like: torch.Tensor) -> torch.Tensor:
        """A copy of ``like`` in the next free bytes of the block."""
        out = carve(self.storage, self.at, tuple(like.shape), like.dtype).copy_(like)
        self.at += _aligned(like.numel() * like.element_size())
        return out


def _aligned(nbytes: int, to: int = 64) -> int:
    return -(-nbytes // to) * to


def new_block(nbytes: int, shared: bool) -> torch.UntypedStorage | None:
    if nbytes == 0:
        return None
    return torch.UntypedStorage._new_shared(nbytes) if shared else torch.UntypedStorage(nbytes)


def carve(
    storage: torch.UntypedStorage | None,
    byte_offset: int,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> torch.Tensor:
    """A ``shape``/``dtype`` tensor on ``storage`` at ``byte_offset`` (a multiple of the item
    size)."""
    n = int(np.prod(shape, dtype=np.int64))
    if storage is None or n == 0:
        return torch.empty(shape, dtype=dtype)
    item = torch.empty(0, dtype=dtype).element_size()
    assert byte_offset % item == 0 and byte_offset + n * item <= storage.nbytes()
    return torch.empty(0, dtype=dtype).set_(storage, byte_offset // item, shape)


class HostBlocks:
    """Recycled host memory for the batch parts handed to shard writers.

    Copying a batch part out of the pinned staging buffer into fresh memory runs at ~1.7 GB/s
    (a page fault per 4 KiB page; 0.9 GB/s in shared memory); into pages used before, at memcpy
    speed (5 / 17 GB/s on the 2-core dev machine). A block is taken for one batch and given back
    only when the shard holding it has been written, so a writer never reads a block that is
    being refilled. ``shared``: blocks live in shared memory (for writer processes, which
    receive a file descriptor instead of the bytes)."""

    GRAIN = 1 << 20  # block sizes are whole MiB

    def __init__(self, shared: bool, max_free: int = 32):
        self.shared, self.max_free = shared, max_free
        self.free: list[torch.UntypedStorage] = []
        self.lock = threading.Lock()
        self.allocated = 0  # blocks made (not reused), for tests and diagnostics

    def take(self, nbytes: int) -> torch.UntypedStorage | None:
        """A block of at least ``nbytes``: a free one when one fits (at most about twice the
        size), else a new one. None for zero bytes. Give it back with :meth:`give`."""
        if nbytes == 0:
            return None
        with self.lock:
            fits = [s for s in self.free if nbytes <= s.nbytes() <= 2 * nbytes + self.GRAIN]
            storage = min(fits, key=lambda s: s.nbytes()) if fits else None
            if storage is not None:
                self.free.remove(storage)
                return storage
            self.allocated += 1
        return new_block(-(-nbytes // self.GRAIN) * self.GRAIN, self.shared)

    def give(self, storages: list[torch.UntypedStorage]) -> None:
        """Blocks whose shard is written: free for reuse. The largest are kept, as many as the
        most one shard has given back (at least ``max_free``): the next shard needs about as many
        (one per batch and teacher - more with OOM splits or equal-length groups), so a smaller cap
        would send its copies to fresh pages, while idle memory stays within one shard's parts."""
        with self.lock:
            self.max_free = max(self.max_free, len(storages))
            self.free.extend(storages)
            if len(self.free) > self.max_free:
                self.free.sort(key=lambda s: s.nbytes(), reverse=True)
                del self.free[self.max_free :]


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


def as_array(x: Rows | np.ndarray) -> np.ndarray:
    return x.array() if isinstance(x, Rows) else x


def materialize(feats: dict | None) -> dict | None:
    """``{teacher: {layer: {part: Rows | array}} | None}`` with every :class:`Rows` as an array."""
    if feats is None:
        return None
    return {
        t: None
        if f is None
        else {layer: {k: as_array(v) for k, v in p.items()} for layer, p in f.items()}
        for t, f in feats.items()
    }


def _to_host(x: torch.Tensor, cuda: bool) -> torch.Tensor:
    if not cuda:
        return x.detach()
    out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    return out.copy_(x.detach(), non_blocking=True)


def device_state(state: dict[str, np.ndarray] | None, device) -> dict[str, torch.Tensor] | None:
    if state is None:
        return None
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in state.items()}
