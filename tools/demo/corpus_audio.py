"""Audio helpers for the demo corpus: decoding, resampling, trimming, loudness, and the numpy
fallback synthesizers used when a Debian package is missing.

Everything here works on float32 mono numpy arrays at ``SAMPLE_RATE`` (16 kHz).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audistill.shards.segments import SAMPLE_RATE

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_class(midi_note: int) -> str:
    return PITCH_CLASSES[midi_note % 12]


@functools.lru_cache(maxsize=64)
def _resampler(sr: int, target: int):
    import torchaudio

    # float64: torch's float32 convolution sums in an order that follows its thread count, so a
    # float32 resample changed low bits with torch.set_num_threads (5e-7 between 2 and 4
    # threads), enough to move a trim boundary and make "the same seed, the same corpus" false
    # (a CI run built speech-word-00001 two ways). In float64 those differences stay far below
    # float32's resolution; the result is cast back to float32.
    return torchaudio.transforms.Resample(sr, target, dtype=torch.float64)  # kernel built once


def resample(x: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float array with torchaudio (sinc interpolation), computed in float64 so
    the result does not depend on torch's thread count."""
    if sr == target:
        return x.astype(np.float32, copy=False)
    with torch.inference_mode():
        y = _resampler(sr, target)(torch.from_numpy(np.ascontiguousarray(x, np.float64)))
    return y.numpy().astype(np.float32)


def load_mono(
    path: str | Path, target: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Decode with soundfile (wav/flac/ogg), downmix to mono, resample to ``target``."""
    frames = -1
    if max_seconds is not None:
        frames = int(max_seconds * sf.info(str(path)).samplerate)
    x, sr = sf.read(str(path), dtype="float32", always_2d=True, frames=frames)  # (N, C)
    return resample(x.mean(axis=1), sr, target)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves with it), by resampling."""
    if abs(factor - 1.0) < 1e-3:
        return x
    # a rate on a 100 Hz grid keeps the resampling ratio (and torchaudio's kernel) small
    return resample(x, int(round(SAMPLE_RATE * factor / 100)) * 100, SAMPLE_RATE)


def active_span(x: np.ndarray, rel_db: float = -35.0, hop: int = 160) -> tuple[int, int]:
    """(start, end) samples of the part louder than ``rel_db`` below the loudest 10 ms frame."""
    n = max(1, len(x) // hop)
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)  # (n,)
    on = np.flatnonzero(20 * np.log10(rms / rms.max()) > rel_db)
    if len(on) == 0:
        return 0, len(x)
    return int(on[0] * hop), int(min(len(x), (on[-1] + 1) * hop))


def trim(x: np.ndarray, rel_db: float = -35.0) -> np.ndarray:
    a, b = active_span(x, rel_db)
    return x[a:b]


def fit_length(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Place ``x`` at ``offset`` in ``n`` zeros, cutting what does not fit."""
    out = np.zeros(n, np.float32)
    seg = x[: max(0, n - offset)]
    out[offset : offset + len(seg)] = seg
    return out


def set_loudness(
    x: np.ndarray, rng: np.random.Generator, db: tuple[float, float] = (-26.0, -18.0)
) -> np.ndarray:
    """Scale to a random RMS level (dBFS) over the active part; keep peaks under 0.98."""
    a, b = active_span(x)
    rms = float(np.sqrt(np.mean(x[a:b] ** 2))) if b > a else 0.0
    if rms < 1e-8:
        return x.astype(np.float32)
    y = x * (10 ** (rng.uniform(*db) / 20) / rms)
    peak = float(np.abs(y).max())
    if peak > 0.98:
        y = y * (0.98 / peak)
    return y.astype(np.float32)


def noise_floor(
    n: int, rng: np.random.Generator, db: tuple[float, float] = (-65.0, -50.0)
) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (rng.uniform(*db) / 20)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Fallback: additive synthesis of instrument-like notes (used without fluidsynth / soundfont).

# family -> (harmonic amplitude exponent, odd harmonics only, attack s, decay s, sustain, release s,
#            exponential decay rate 1/s or 0, vibrato depth in semitones)
_FAMILY_TIMBRE: dict[str, tuple[float, bool, float, float, float, float, float, float]] = {
    "piano": (1.6, False, 0.005, 0.30, 0.35, 0.25, 2.5, 0.0),
    "organ": (0.6, False, 0.02, 0.05, 0.95, 0.05, 0.0, 0.0),
    "guitar": (2.0, False, 0.003, 0.15, 0.25, 0.20, 3.5, 0.0),
    "bass": (2.4, False, 0.01, 0.20, 0.50, 0.10, 1.5, 0.0),
    "strings": (1.0, False, 0.15, 0.10, 0.85, 0.25, 0.0, 0.12),
    "brass": (0.8, False, 0.06, 0.10, 0.80, 0.12, 0.0, 0.05),
    "reed": (1.0, True, 0.04, 0.05, 0.85, 0.08, 0.0, 0.04),
    "pipe": (3.0, False, 0.06, 0.05, 0.90, 0.10, 0.0, 0.08),
}
SYNTH_FAMILIES = tuple(_FAMILY_TIMBRE)


def _adsr(n_on: int, n_total: int, sr: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    env = np.zeros(n_total, np.float32)
    na, nd, nr = max(1, int(a * sr)), max(1, int(d * sr)), max(1, int(r * sr))
    seg = np.concatenate(
        [np.linspace(0, 1, na), np.linspace(1, s, nd), np.full(max(0, n_on - na - nd), s)]
    )[:n_on]
    env[:n_on] = seg
    last = seg[-1] if len(seg) else 0.0
    tail = last * np.linspace(1, 0, nr)[: n_total - n_on]
    env[n_on : n_on + len(tail)] = tail
    return env


def synth_note(
    family: str, midi_note: int, hold_s: float, total_s: float, rng: np.random.Generator
) -> np.ndarray:
    """A note of ``family`` starting at 0, held ``hold_s`` then released, ``total_s`` long."""
    exp, odd, a, d, s, r, decay, vib = _FAMILY_TIMBRE[family]
    sr = SAMPLE_RATE
    n = int(total_s * sr)
    t = np.arange(n) / sr
    f0 = 440.0 * 2 ** ((midi_note - 69) / 12)
    vibrato = vib * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t)
    phase = 2 * np.pi * np.cumsum(f0 * 2 ** (vibrato / 12)) / sr
    x = np.zeros(n, np.float64)
    for k in range(1, 40):
        if k * f0 >= sr / 2 - 200:
            break
        if odd and k % 2 == 0:
            continue
        amp = k ** (-exp) * rng.uniform(0.8, 1.2)
        x += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    if family == "pipe":  # breath noise
        x += 0.03 * rng.standard_normal(n)
    if decay:
        x *= np.exp(-decay * t)
    x *= _adsr(int(hold_s * sr), n, sr, a, d, s, r)
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Fallback: filtered-noise and synthetic sound classes (used without recorded samples).

SYNTH_SOUNDS = (
    "rumble",
    "hiss",
    "noise_burst",
    "chirp_up",
    "chirp_down",
    "click_train",
    "hum",
    "knock",
)


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spec[f > cutoff] = 0
    return np.fft.irfft(spec, len(x))


def _bandpass(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, len(x))


def synth_sound(category: str, dur_s: float, rng: np.random.Generator) -> np.ndarray:
    sr = SAMPLE_RATE
    n = int(dur_s * sr)
    t = np.arange(n) / sr
    w = rng.standard_normal(n)
    if category == "rumble":
        x = _lowpass(w, rng.uniform(80, 250))
    elif category == "hiss":
        x = _bandpass(w, rng.uniform(3000, 4500), 7900)
    elif category == "noise_burst":
        x = _bandpass(w, 300, 5000) * np.exp(-t * rng.uniform(6, 14))
    elif category in ("chirp_up", "chirp_down"):
        f0, f1 = rng.uniform(200, 600), rng.uniform(2000, 5000)
        if category == "chirp_down":
            f0, f1 = f1, f0
        x = np.sin(2 * np.pi * np.cumsum(np.geomspace(f0, f1, n)) / sr)
    elif category == "click_train":
        x = np.zeros(n)
        period = int(sr / rng.uniform(4, 12))
        for i in range(int(rng.integers(0, period)), n - 40, period):
            x[i : i + 40] += np.hanning(40) * rng.choice([-1, 1])
    elif category == "hum":
        f = rng.choice([50.0, 60.0]) * rng.uniform(0.97, 1.03)
        x = sum(np.sin(2 * np.pi * k * f * t) / k for k in range(1, 8)) + 0.05 * w
    elif category == "knock":
        x = np.zeros(n)
        for _ in range(int(rng.integers(2, 5))):
            i = int(rng.integers(0, max(1, n - 2000)))
            m = min(2000, n - i)
            tt = np.arange(m) / sr
            x[i : i + m] += np.sin(2 * np.pi * rng.uniform(120, 300) * tt) * np.exp(-tt * 40)
    else:
        raise ValueError(f"unknown synthetic sound category {category!r}")
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)
