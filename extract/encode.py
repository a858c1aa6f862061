"""Teacher outputs -> codec parts per segment, encoded on the teacher's device, copied to host
while the device runs on.

Each kept layer of a batch ``(B, T, D)`` is encoded in one :meth:`Codec.encode_padded` call, which
also flags (on the device, without a sync) the items with a frame the codec refuses: NaN/Inf or
beyond its range. On CUDA the parts and flags are then copied into pinned host memory with
``non_blocking`` copies and an event is recorded, so the host can launch the next batch's forward
before it waits for this one (:meth:`Encoded.result`). On the CPU the same code runs synchronously.
"""

from __future__ import annotations

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

    def result(self) -> list[dict[int, dict[str, np.ndarray]] | None]:
        """Per item: ``{layer: {part: array}}`` (own copies, not views of the staging buffers), or
        None where the codec refused a frame. Waits for this batch's copies only."""
        if self.event is not None:
            self.event.synchronize()
        ok = self.ok.tolist()
        host = {layer: {k: v.numpy() for k, v in p.items()} for layer, p in self.host.items()}
        out: list[dict | None] = []
        for b, n in enumerate(self.flen):
            if not ok[b]:
                out.append(None)
                continue
            out.append({layer: {k: np.array(v[b, :n] if self.kinds[k] == "frame" else v[b]) for k, v in p.items()}
                        for layer, p in host.items()})
        return out


def _to_host(x: torch.Tensor, cuda: bool) -> torch.Tensor:
    if not cuda:
        return x.detach()
    out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    return out.copy_(x.detach(), non_blocking=True)


def device_state(state: dict[str, np.ndarray] | None, device) -> dict[str, torch.Tensor] | None:
    if state is None:
        return None
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in state.items()}
