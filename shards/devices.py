"""Small host/device tensor helpers shared by the codecs, the teachers and the student."""

from __future__ import annotations

import torch


def host_to_device(x, device) -> torch.Tensor:
    """A small host tensor (or list) on ``device`` without a stream sync: a plain ``.to("cuda")``
    from pageable memory waits for every kernel queued before it, which would stop the host from
    running ahead of the device. Through pinned memory the copy is queued like a kernel."""
    x = torch.as_tensor(x)
    device = torch.device(device)
    if device.type != "cuda" or x.device.type == "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def length_mask(lengths, t: int, device) -> torch.Tensor:
    """``(B, t)`` bool on ``device``: True for the first ``lengths[b]`` positions of row ``b``
    (``lengths``: a host list or tensor, copied without a stream sync)."""
    device = torch.device(device)
    return torch.arange(t, device=device)[None] < host_to_device(lengths, device)[:, None]
