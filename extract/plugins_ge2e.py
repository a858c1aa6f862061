"""GE2E speaker encoder (Resemblyzer's pretrained ``VoiceEncoder``) as a plugin teacher (extra
``ge2e``): the demo's speaker-aware speech teacher, the role WavLM plays in USAD.

The weights ship inside the ``resemblyzer`` wheel (``resemblyzer/pretrained.pt``); the package is
never imported (its ``__init__`` pulls in webrtcvad and librosa), its file is located and loaded.
``source = "resemblyzer"`` means that file; any other source is a path to a checkpoint of the same
format (``{"model_state": {"lstm.*", "linear.*"}}``).

Input as Resemblyzer prepares it: 16 kHz audio raised to -30 dBFS when quieter (never lowered),
then a 40-band *power* mel spectrogram (25 ms Hann window, 10 ms hop, centered with zero padding:
``n // 160 + 1`` frames at 100 Hz, Slaney mel scale and norm - librosa's ``melspectrogram``
defaults). Network: three LSTM layers of 256, then ``ReLU(linear)`` to the 256-dim embedding
space (the utterance embedding is its L2-normed value at the last frame). Hidden states:
0..2 = the LSTM layers' outputs at every frame, 3 = the embedding projection at every frame.
Resemblyzer also trims long silences with a VAD before embedding; a teacher must keep every frame
aligned with the audio, so that step is left out. The LSTM runs forward in time, so zero padding
after an item changes none of its frames (``pad_invariant``).
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import torch.nn as nn

from audistill.shards.segments import SAMPLE_RATE

from .errors import TeacherError
from .spec import TeacherSpec
from .teachers import Teacher

N_FFT, HOP, N_MELS, HIDDEN, DEPTH = 400, 160, 40, 256, 3
TARGET_DBFS = -30.0
_MIN_RMS = 1e-4  # digital silence is raised at most 50 dB, not to infinity


def packaged_weights() -> Path | None:
    """``resemblyzer/pretrained.pt`` of the installed wheel, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    return path if path.is_file() else None


class GE2E(nn.Module):
    """Resemblyzer's network, its LSTM split into single layers so every layer's output is seen."""

    def __init__(self):
        super().__init__()
        self.lstms = nn.ModuleList(
            nn.LSTM(N_MELS if i == 0 else HIDDEN, HIDDEN, batch_first=True) for i in range(DEPTH)
        )
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        fb = _mel_filters()
        self.register_buffer("mel_fb", fb, persistent=False)  # (201, 40)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def load_resemblyzer(self, state: dict[str, torch.Tensor]) -> None:
        """Resemblyzer's ``model_state`` (a 3-layer ``nn.LSTM``: ``lstm.*_l{i}``) into the split
        layers; KeyError / RuntimeError when it is not that network."""
        mine = {"linear.weight": state["linear.weight"], "linear.bias": state["linear.bias"]}
        for i in range(DEPTH):
            for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mine[f"lstms.{i}.{p}_l0"] = state[f"lstm.{p}_l{i}"]
        self.load_state_dict(mine, strict=True)

    def mel(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, N) 16 kHz, valid ``lengths`` -> (B, T, 40) power mel after volume normalization."""
        wave = wave.float()  # the mel in float32 whatever the weights run in (cuFFT: no half 400)
        n = lengths.to(wave.device).clamp(min=1).float()
        rms = (wave.pow(2).sum(1) / n).sqrt().clamp(min=_MIN_RMS)
        gain = (10 ** (TARGET_DBFS / 20) / rms).clamp(min=1.0)  # increase only
        x = wave * gain[:, None]
        spec = torch.stft(
            x,
            N_FFT,
            HOP,
            window=self.window.float(),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec.abs().pow(2).transpose(1, 2) @ self.mel_fb.float()  # (B, T, 40)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        x = self.mel(wave, lengths).to(self.linear.weight.dtype)
        hs = []
        for lstm in self.lstms:
            x, _ = lstm(x)
            hs.append(x)
        hs.append(torch.relu(self.linear(x)))
        return hs  # 4 x (B, T, 256)


def _mel_filters() -> torch.Tensor:
    import torchaudio.functional as AF

    return AF.melscale_fbanks(
        N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
    )


def _weights_path(spec: TeacherSpec) -> tuple[Path, str | None]:
    """The checkpoint file and, for the packaged one, the package's revision."""
    if spec.source == "resemblyzer":
        path = packaged_weights()
        if path is None:
            raise TeacherError(
                f"teacher {spec.name!r}: resemblyzer is not installed, so its GE2E weights "
                "(resemblyzer/pretrained.pt) are not here; pip install 'audistill[ge2e]'"
            )
        try:
            return path, f"resemblyzer=={version('resemblyzer')}"
        except PackageNotFoundError:
            return path, None
    path = Path(spec.source).expanduser()
    if not path.is_file():
        raise TeacherError(
            f"teacher {spec.name!r}: GE2E weights {str(path)!r} not found (source is "
            "'resemblyzer' for the packaged ones, or a path to a checkpoint in its format)"
        )
    return path, None


class GE2ETeacher(Teacher):
    def __init__(self, spec: TeacherSpec, device):
        path, revision = _weights_path(spec)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            net = GE2E()
            net.load_resemblyzer(ckpt["model_state"])
        except (KeyError, RuntimeError, TypeError, OSError, EOFError) as e:
            raise TeacherError(
                f"teacher {spec.name!r}: {str(path)!r} is not a GE2E checkpoint in Resemblyzer's "
                f"format ({type(e).__name__}: {e})"
            ) from e
        super()._setup(
            spec,
            device,
            net.to(device).eval(),
            SAMPLE_RATE / HOP,
            HIDDEN,
            DEPTH + 1,
            {
                "model": "GE2E speaker encoder (Resemblyzer)",
                "weights": path.name,
                "mel": "40-band power mel, 25 ms / 10 ms, -30 dBFS increase-only",
                "layer_semantics": "0..2 = LSTM layers 1..3, 3 = ReLU(linear) embedding space",
            },
        )
        self.revision = spec.revision or revision

    def _native_frames(self, num_samples_16k: int) -> int:
        return num_samples_16k // HOP + 1

    def _forward(self, wave, lengths):
        hs = self.model(wave, lengths)
        return {k: hs[k] for k in self.layers}


def load_ge2e(spec: TeacherSpec, device="cpu") -> Teacher:
    return GE2ETeacher(spec, device)


def _describe(spec: TeacherSpec) -> dict:
    return {"frame_rate": 100.0, "dim": HIDDEN, "num_layers": DEPTH + 1}


load_ge2e.describe = _describe  # type: ignore[attr-defined]
