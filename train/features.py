"""The student's input: a 128-bin log-mel filterbank (25 ms window, 10 ms hop), normalized.

Computed batched on the training device from 16 kHz waveforms, so the bank stores only audio.
"""

from __future__ import annotations

import torch

from audistill.shards.segments import SAMPLE_RATE

N_MELS = 128
WIN = 400  # 25 ms
HOP = 160  # 10 ms -> 100 Hz
# Fixed normalization of log-mel values (AudioSet-style statistics, as in AST / BEATs).
MEL_MEAN = -4.27
MEL_STD = 4.57


class LogMel(torch.nn.Module):
    """``(B, N)`` float waveform at 16 kHz -> ``(B, N // 160, 128)`` normalized log-mel."""

    def __init__(self, n_mels: int = N_MELS):
        super().__init__()
        import torchaudio

        with torch.device(
            "cpu"
        ):  # the filterbank is built eagerly, also under a meta-device context
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=SAMPLE_RATE,
                n_fft=1024,
                win_length=WIN,
                hop_length=HOP,
                n_mels=n_mels,
                center=True,
                power=2.0,
                window_fn=torch.hann_window,
            )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = self.mel(wave.float())  # (B, M, N // 160 + 1)
        x = torch.log(spec + 1e-6)[..., : wave.shape[-1] // HOP]  # (B, M, T100)
        return ((x - MEL_MEAN) / (2 * MEL_STD)).transpose(1, 2)  # (B, T100, M)


def num_mel_frames(num_samples: int) -> int:
    return num_samples // HOP
