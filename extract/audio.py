"""Decoding audio (soundfile: wav / flac / ogg / mp3), to mono 16 kHz, with checks.

Every failure is an :class:`AudioError` with a short reason; the pipeline records it and goes on.
"""

from __future__ import annotations

import io
import math
import os
import tarfile

import numpy as np
import soundfile as sf
import torch

from audistill.shards.segments import SAMPLE_RATE

from .errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
_TARS: dict[str, dict[str, bytes]] = {}  # compressed tars: every member, a few tars per process
_INDEX: dict[str, dict[str, tuple[int, int]] | AudioError] = {}  # uncompressed tars: where each member is


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def open_binary(path: str, storage_options: dict | None = None, mode: str = "rb"):
    """A binary file object for a local path or an fsspec URL."""
    if is_url(path):
        import fsspec

        return fsspec.open(path, mode, **(storage_options or {})).open()
    return open(path.removeprefix("file://"), mode)


def read_ranges(path: str, ranges: list[tuple[int, int]], storage_options: dict | None = None) -> list[bytes]:
    """The bytes ``[start, end)`` of each range of a local file or an fsspec URL: on a store, one
    ranged request each (concurrent where it can), exactly those bytes - a file object would read
    ahead in 5 MB blocks."""
    if not ranges:
        return []
    if is_url(path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(path, **(storage_options or {}))
        return fs.cat_ranges([p] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges])
    out = []
    with open_binary(path) as f:
        for a, b in ranges:
            f.seek(a)
            out.append(f.read(b - a))
    return out


def tar_members(url: str, storage_options: dict | None = None) -> dict[str, bytes]:
    """Every regular member of a tar, read once per process and cached (small, per-shard tars)."""
    if url not in _TARS:
        if len(_TARS) > 4:
            _TARS.pop(next(iter(_TARS)))
        try:
            with open_binary(url, storage_options) as f, tarfile.open(fileobj=f, mode="r|*") as tf:
                members = {}
                for m in tf:
                    if m.isfile():
                        fobj = tf.extractfile(m)
                        assert fobj is not None
                        members[m.name] = fobj.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise AudioError(f"unreadable tar {url}: {e}") from e
        _TARS[url] = members
    return _TARS[url]


def tar_index(url: str, storage_options: dict | None = None) -> dict[str, tuple[int, int]] | None:
    """Member name -> (offset, size) of an uncompressed tar, read once per process (the tar is
    streamed through, its data not kept); None for a compressed tar, which cannot be seeked."""
    if url.lower().endswith((".tar.gz", ".tgz")):
        return None
    if url not in _INDEX:
        if len(_INDEX) >= 64:
            _INDEX.pop(next(iter(_INDEX)))
        try:
            with open_binary(url, storage_options) as f, tarfile.open(fileobj=f, mode="r|") as tf:
                _INDEX[url] = {m.name: (m.offset_data, m.size) for m in tf if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as e:  # once per process, then for every member of it
            _INDEX[url] = AudioError(f"unreadable tar {url}: {e}")
    got = _INDEX[url]
    if isinstance(got, AudioError):
        raise got
    return got


def read_member(url: str, member: str, storage_options: dict | None = None) -> bytes:
    """One member's bytes: read at its offset from an uncompressed tar (decode workers each used to
    hold whole tars - five per process, gigabytes with WebDataset audio shards), or from the cached
    members of a tar planning read whole in this process, or of a compressed one."""
    index = None if url in _TARS else tar_index(url, storage_options)
    found = tar_members(url, storage_options) if index is None else index
    if member not in found:
        raise AudioError(f"member {member} missing from {url}")
    if index is None:
        return found[member]
    offset, size = index[member]
    try:
        (data,) = read_ranges(url, [(offset, offset + size)], storage_options)
    except OSError as e:
        raise AudioError(f"cannot read member {member} of {url}: {e}") from e
    if len(data) != size:
        raise AudioError(f"member {member} of {url} is truncated ({len(data)} of {size} bytes)")
    return data


def forget_tars() -> None:
    """Drop the whole tars planning read (decode workers forked later need only offsets)."""
    _TARS.clear()


def _source(path: str, member: str | None, storage_options: dict | None):
    if member is not None:
        return io.BytesIO(read_member(path, member, storage_options))
    if is_url(path):
        return open_binary(path, storage_options)
    local = path.removeprefix("file://")
    if not os.path.isfile(local):
        raise FileNotFoundError(local)
    return os.fsencode(local)  # bytes: a name that is not UTF-8 opens as the OS gave it


def audio_info(path: str, member: str | None = None, storage_options: dict | None = None) -> tuple[int, int]:
    """(frames, sample rate) from the header; AudioError if missing or unreadable."""
    try:
        info = sf.info(_source(path, member, storage_options))
    except FileNotFoundError:
        raise AudioError("file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"unreadable: {e}") from e
    return int(info.frames), int(info.samplerate)


def read_audio(path: str, member: str | None = None, start: float = 0.0, end: float | None = None,
               storage_options: dict | None = None, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode ``[start, end)`` seconds as float32 mono ``(N,)`` at the file's own rate.

    ``max_seconds``: read at most one frame more than that (enough to tell a longer file; a
    wrongly declared duration must not decode hours of audio)."""
    try:
        with sf.SoundFile(_source(path, member, storage_options)) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            count = -1 if end is None else max(0, int(round(end * sr)) - first)
            if max_seconds is not None:
                cap = int(math.ceil(max_seconds * sr)) + 1
                count = cap if count < 0 else min(count, cap)
            if first:
                f.seek(min(first, f.frames))
            x = f.read(frames=count, dtype="float32", always_2d=True)  # (N, C)
    except FileNotFoundError:
        raise AudioError("file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(f"cannot decode: {e}") from e
    return x.mean(axis=1), int(sr)


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """Resample mono float32 audio to 16 kHz (torchaudio's windowed-sinc resampler)."""
    if sr == SAMPLE_RATE:
        return np.ascontiguousarray(x, dtype=np.float32)
    import torchaudio  # only where resampling is needed: `shards` commands never load it

    y = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), sr, SAMPLE_RATE)
    return y.numpy()


def check_audio(x: np.ndarray, min_samples: int) -> np.ndarray:
    if x.size == 0:
        raise AudioError("empty audio")
    if not np.isfinite(x).all():
        raise AudioError("audio contains NaN or Inf")
    if x.size < min_samples:
        raise AudioError(f"too short: {x.size} samples at 16 kHz, need {min_samples}")
    return x


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] as int16 (clipped), the form the bank stores."""
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def load_segment(path: str, member: str | None, start: float, end: float | None, min_samples: int,
                 storage_options: dict | None = None, max_samples: int | None = None) -> np.ndarray:
    """One segment as float32 mono 16 kHz, checked (AudioError on any problem).

    ``max_samples``: the longest segment the teachers take (their window). A planned segment is
    never longer, unless its length came from a manifest's ``duration`` that is wrong: that is
    an error, not audio silently cut to the window or features that cover only part of it."""
    x, sr = read_audio(path, member, start, end, storage_options,
                       None if max_samples is None else max_samples / SAMPLE_RATE)
    y = check_audio(to_16k(x, sr), min_samples)
    if max_samples is not None and y.size > max_samples:
        raise AudioError(f"longer than the teachers' {max_samples / SAMPLE_RATE:g} s window, so longer than any planned "
                         "segment (is a manifest's duration for this file wrong?)")
    return y
