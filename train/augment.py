"""Student-side augmentation that keeps the bank's targets valid: it changes only what the
student hears (gain, additive noise from a list of files, a zeroed time span), never the
timing, so the stored teacher frames still line up. Off by default."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audistill.shards.segments import SAMPLE_RATE


@dataclass
class Augment:
    gain_db: float = 0.0
    noise_files: list = field(default_factory=list)
    snr_db: tuple = (5.0, 20.0)
    noise_prob: float = 0.5
    time_mask_seconds: float = 0.0
    _noise: list = field(default_factory=list, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> Augment:
        return cls(
            gain_db=d.get("gain_db", 0.0),
            noise_files=list(d.get("noise_files", [])),
            snr_db=tuple(d.get("snr_db", (5.0, 20.0))),
            noise_prob=d.get("noise_prob", 0.5),
            time_mask_seconds=d.get("time_mask_seconds", 0.0),
        )

    @property
    def active(self) -> bool:
        return bool(self.gain_db or self.noise_files or self.time_mask_seconds)

    def noises(self) -> list[np.ndarray]:
        if not self._noise and self.noise_files:
            import soundfile as sf

            from audistill.train.errors import ConfigError

            for f in self.noise_files:
                try:
                    x, sr = sf.read(f, dtype="float32", always_2d=True)
                except (OSError, RuntimeError) as e:
                    raise ConfigError(f"augment.noise_files: cannot read {f}: {e}") from None
                x = x.mean(1)
                if sr != SAMPLE_RATE:
                    import torchaudio

                    x = torchaudio.functional.resample(torch.from_numpy(x), sr, SAMPLE_RATE).numpy()
                self._noise.append(x)
        return self._noise

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(N,) float waveform -> (N,) augmented, drawn from ``rng`` (deterministic per item)."""
        if self.gain_db:
            x = x * float(10 ** (rng.uniform(-self.gain_db, self.gain_db) / 20))
        if self.noise_files and rng.random() < self.noise_prob and len(x):
            noises = self.noises()
            n = noises[int(rng.integers(len(noises)))]
            reps = int(np.ceil(len(x) / max(1, len(n))))
            off = int(rng.integers(0, max(1, len(n))))
            seg = torch.from_numpy(np.tile(n, reps + 1)[off : off + len(x)].copy())
            snr = rng.uniform(*self.snr_db)
            p_x, p_n = float(x.pow(2).mean()) + 1e-10, float(seg.pow(2).mean()) + 1e-10
            x = x + seg * float(np.sqrt(p_x / (p_n * 10 ** (snr / 10))))
        if self.time_mask_seconds and len(x):
            span = int(rng.uniform(0, self.time_mask_seconds) * SAMPLE_RATE)
            if 0 < span < len(x):
                s = int(rng.integers(0, len(x) - span))
                x = x.clone()
                x[s : s + span] = 0
        return x
