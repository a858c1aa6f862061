"""Tiny teachers (a stand-in with the extraction registry's interface) and tiny banks."""

from __future__ import annotations

import pytest
import torch

from audistill.shards.catalog import TeacherRecord
from audistill.shards.codecs import get_codec
from audistill.tools.bench.synth import write_bank


class FrameTeacher:
    """Deterministic stand-in teacher: per frame of ``hop`` samples, the log power spectrum of the
    frame through a fixed random projection per layer (tanh), so students can learn it."""

    def __init__(
        self,
        name: str,
        frame_rate: float = 50.0,
        dim: int = 16,
        num_layers: int = 5,
        layers=None,
        home_domain: str = "unknown",
        domains=(),
        seed: int = 0,
    ):
        self.name, self.frame_rate, self.dim, self.num_layers = name, frame_rate, dim, num_layers
        self.layers = list(layers if layers is not None else range(num_layers))
        self.home_domain, self.domains = home_domain, list(domains)
        self.hop = 16000 / frame_rate
        g = torch.Generator().manual_seed(seed)
        self.win = 400
        self.proj = {
            la: torch.randn(self.win // 2 + 1, dim, generator=g) / 15 for la in range(num_layers)
        }

    def num_frames(self, n: int) -> int:
        return int(round(n / self.hop))

    def record(self, codec: str = "float32") -> TeacherRecord:
        """Its catalog entry (lossless features: tests compare against the teacher's output)."""
        return TeacherRecord(
            name=self.name,
            source=f"synthetic/{self.name}",
            dim=self.dim,
            frame_rate=float(self.frame_rate),
            codec=get_codec(codec).record(),
            layers=list(self.layers),
            num_layers=self.num_layers,
            domains=list(self.domains),
            home_domain=self.home_domain,
        )

    def extract(self, wave: torch.Tensor, lengths: torch.Tensor):
        b, n = wave.shape
        t = self.num_frames(n)
        starts = (torch.arange(t, dtype=torch.float64) * self.hop).round().long()
        pad = torch.nn.functional.pad(wave.float(), (0, self.win))
        frames = torch.stack([pad[:, s : s + self.win] for s in starts.tolist()], 1)  # (B, T, W)
        spec = torch.log(
            torch.fft.rfft(frames * torch.hann_window(self.win)).abs().pow(2) + 1e-4
        )  # (B, T, F)
        out = {
            la: torch.tanh((spec + 2.0) @ self.proj[la]) for la in self.layers
        }  # per item: batch-independent
        fl = torch.tensor([self.num_frames(int(x)) for x in lengths])
        return out, fl


def make_teachers():
    return [
        FrameTeacher("tspeech", 50.0, 16, 5, home_domain="speech", seed=1),
        FrameTeacher(
            "tmusic", 25.0, 12, 5, home_domain="music", domains=("music", "sound"), seed=2
        ),
    ]


@pytest.fixture
def teachers():
    return make_teachers()


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory):
    """A 3-shard Zarr bank written by the two stand-in teachers (read-only for tests)."""
    root = str(tmp_path_factory.mktemp("train") / "bank")
    write_bank(root, make_teachers(), num_shards=3, segments_per_shard=4, seconds=(1.5, 3.0))
    return root


def tiny_config(bank_root: str, out_dir: str, **over) -> dict:
    raw = {
        "run": {"name": "t", "out_dir": out_dir, "seed": 0, "device": "cpu"},
        "student": {"size": "tiny"},
        "bank": {"root": bank_root},
        "data": {"crop_seconds": 1.0, "batch_seconds": 4.0, "num_workers": 0, "shuffle_buffer": 4},
        "teachers": [{"name": "tspeech", "num_targets": 2}, {"name": "tmusic", "num_targets": 2}],
        "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 20},
        "log": {"every": 1, "tensorboard": False},
    }
    for k, v in over.items():
        sec, key = k.split(".", 1)
        raw.setdefault(sec, {})[key] = v
    return raw
