"""Teacher outputs -> codec parts per segment, encoded on the teacher's device, copied to host
while the device runs on.

Each kept layer of a batch ``(B, T, D)`` is encoded in one :meth:`Codec.encode_padded` call, which
also flags (on the device, without a sync) the items with a frame the codec refuses: NaN/Inf or
beyond its range. On CUDA the parts and flags are then copied into pinned host memory with
``non_blocking`` copies and an event is recorded, so the host can launch the next batch's forward
before it waits for this one (:meth:`Encoded.result`). On the CPU the same code runs synchronously.
"""

from __future__ import annotations

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

    def result(self, mode: str = "arrays") -> list[dict[int, dict] | None]:
        """Per item: ``{layer: {part: ...}}``, or None where the codec refused a frame. Waits for
        this batch's copies only. Never hands out views of the (reused) staging buffers.

        ``mode``: "arrays" - each item's own numpy copies (simple, but one copy per item and part
        under the GIL); "rows" - :class:`Rows` references into one copy of each batch part, made
        by torch without the GIL (for writer threads); "shared" - the same, with the batch copy in
        shared memory, so handing a shard to a writer process sends a file descriptor per batch
        part instead of pickled bytes (~1.3 ms per MB of main-process time)."""
        t0 = time.perf_counter()
        if self.event is not None:
            self.event.synchronize()
        self.wait_s = time.perf_counter() - t0  # the host waited this long for the device
        ok = self.ok.tolist()
        if mode == "shared":
            host = {layer: {k: torch.empty(v.shape, dtype=v.dtype).share_memory_().copy_(v) for k, v in p.items()}
                    for layer, p in self.host.items()}
        elif mode == "rows":
            host = {layer: {k: torch.empty(v.shape, dtype=v.dtype).copy_(v) if self.event is not None else v for k, v in p.items()}
                    for layer, p in self.host.items()}
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
