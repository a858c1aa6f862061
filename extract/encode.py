"""Teacher outputs -> codec parts per segment, encoded on the teacher's device before the copy.

Codecs whose parts are all frame rows and whose rows decode independently are run once per
layer over the valid frames of the whole batch ``(sum T_b, D)``; the others once per segment.
NaN/Inf in a segment's valid frames (any kept layer) marks that segment failed for the teacher.
"""

from __future__ import annotations

import numpy as np
import torch

from audistill.shards.codecs import Codec


def valid_mask(flen: torch.Tensor, t: int, device) -> torch.Tensor:
    return torch.arange(t, device=device)[None] < flen.to(device)[:, None]  # (B, T)


def nonfinite_items(feats: dict[int, torch.Tensor], flen: torch.Tensor) -> list[bool]:
    """Per batch item: True when any kept layer has NaN/Inf in its valid frames (one sync)."""
    flags = []
    for x in feats.values():  # (B, T, D)
        mask = valid_mask(flen, x.shape[1], x.device)
        flags.append(((~torch.isfinite(x)).any(-1) & mask).any(1))  # (B,)
    return torch.stack(flags).any(0).cpu().tolist()


def _batchable(codec: Codec, dim: int) -> bool:
    return codec.row_independent and all(p.kind == "frame" for p in codec.parts(dim))


def _host(parts: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in parts.items()}


def encode_batch(feats: dict[int, torch.Tensor], flen: torch.Tensor, keep: list[int], codec: Codec,
                 states: dict[int, dict | None]) -> list[dict[int, dict[str, np.ndarray]]]:
    """Parts ``[{layer: {part: array}}]`` for the batch positions in ``keep`` (in that order)."""
    out: list[dict[int, dict]] = [{} for _ in keep]
    if not keep:
        return out
    lens = [int(flen[b]) for b in keep]
    for layer, x in feats.items():  # x: (B, T, D)
        x = x.float()
        state = states.get(layer)
        if _batchable(codec, x.shape[2]):
            rows = torch.cat([x[b, :n] for b, n in zip(keep, lens, strict=True)])  # (sum T, D)
            parts = _host(codec.encode(rows, state))
            bounds = np.cumsum([0] + lens)
            for j in range(len(keep)):
                out[j][layer] = {k: v[bounds[j]: bounds[j + 1]] for k, v in parts.items()}
        else:
            for j, (b, n) in enumerate(zip(keep, lens, strict=True)):
                out[j][layer] = _host(codec.encode(x[b, :n], state))
    return out


def device_state(state: dict[str, np.ndarray] | None, device) -> dict[str, torch.Tensor] | None:
    if state is None:
        return None
    return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in state.items()}
