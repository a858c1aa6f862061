"""Decoding audio (soundfile: wav / flac / ogg / mp3), to mono 16 kHz, with checks.

Every failure is an :class:`AudioError` with a short reason; the pipeline records it and goes on.
"""

from __future__ import annotations

import bz2
import io
import lzma
import math
import os
import re
import tarfile
import zlib

import numpy as np
import soundfile as sf
import torch

from audistill.shards.segments import SAMPLE_RATE

from .errors import AudioError, CorpusError

MIN_RATE, MAX_RATE = 1000, 384_000  # sample rates outside this range are a damaged header
DURATION_TOLERANCE_S = 0.05  # a declared duration may be rounded by this much, no more
_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+) \(should be (\d+)\)", re.M)
_BLOCK_ALIGN = re.compile(r"^\s*Block Align\s*:\s*(\d+)", re.M)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
_TARS: dict[str, dict[str, bytes]] = {}  # compressed tars: every member, a few tars per process
_INDEX: dict[
    str, dict[str, tuple[int, int]] | AudioError
] = {}  # uncompressed tars: where each member is
_CUTS: dict[str, str | None] = {}  # tars scanned: why one is cut short (None: complete)


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def open_binary(path: str, storage_options: dict | None = None, mode: str = "rb"):
    """A binary file object for a local path or an fsspec URL."""
    if is_url(path):
        import fsspec

        try:
            return fsspec.open(path, mode, **(storage_options or {})).open()
        except OSError:  # this file: missing, forbidden ...
            raise
        # noqa: BLE001 - credentials, endpoint, options: every file of the store fails alike
        except Exception as e:
            raise CorpusError(f"cannot open {path}: {type(e).__name__}: {e}") from e
    return open(path.removeprefix("file://"), mode)


def read_ranges(
    path: str, ranges: list[tuple[int, int]], storage_options: dict | None = None
) -> list[bytes]:
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


class _Counting:
    """A read-only stream that counts the bytes read through it (all tarfile's stream mode
    needs)."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def read(self, size: int = -1) -> bytes:
        b = self.f.read(size)
        self.n += len(b)
        return b


class _Inflating:
    """The decompressed bytes of a gzip / bzip2 / xz stream, read-only. A stream cut short ends
    where its data ends (``cut`` is set) instead of raising as ``gzip.GzipFile`` does - which
    loses the bytes decoded in that read, and with them the last member before the cut."""

    def __init__(self, f, make):
        self.f, self.make, self.d, self.buf, self.pos, self.cut = (
            f,
            make,
            make(),
            bytearray(),
            0,
            False,
        )

    def read(self, size: int = -1) -> bytes:
        if self.pos > (1 << 20) and self.pos * 2 > len(
            self.buf
        ):  # drop what was read, now and then
            del self.buf[: self.pos]
            self.pos = 0
        while size < 0 or len(self.buf) - self.pos < size:
            if (
                self.d.eof
            ):  # the end of one compressed member: another may follow (concatenated gzip)
                rest = self.d.unused_data or self.f.read(1 << 16)
                if not rest:
                    break
                self.d = self.make()
                self.buf += self.d.decompress(rest)
                continue
            chunk = self.f.read(1 << 16)
            if not chunk:
                self.cut = True
                break
            self.buf += self.d.decompress(chunk)
        end = len(self.buf) if size < 0 else min(self.pos + size, len(self.buf))
        out = bytes(self.buf[self.pos : end])
        self.pos = end
        return out


_DECOMPRESSORS = {
    b"\x1f\x8b": lambda: zlib.decompressobj(wbits=31),
    b"BZh": bz2.BZ2Decompressor,
    b"\xfd7zXZ\x00": lzma.LZMADecompressor,
}


def _scan_tar(url: str, storage_options: dict | None, on_member) -> tuple[int, str | None]:
    """Stream a tar (plain, gzip, bzip2 or xz) once, calling ``on_member(tar, member)`` on each
    regular member. Returns the stream's length and, for a tar cut short, why: a compressed
    stream that ends early, a member whose data stops, or no end-of-archive block where the
    last header ends (tarfile takes a cut inside a header for the end of the archive). Members
    before the cut stay usable. AudioError when not even the first header can be read."""
    seen = None
    try:
        with open_binary(url, storage_options) as f:
            magic = f.read(6)
            f.seek(0)
            make = next((m for key, m in _DECOMPRESSORS.items() if magic.startswith(key)), None)
            inflating = _Inflating(f, make) if make else None
            src = _Counting(inflating or f)
            try:
                with tarfile.open(fileobj=src, mode="r|") as tf:
                    for m in tf:
                        seen = m.name
                        if m.isfile():
                            on_member(tf, m)
                    end = tf.offset
                while src.read(1 << 20):  # the rest, to the end of a compressed stream
                    pass
            except (tarfile.ReadError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
                if seen is None:
                    raise
                return src.n, f"truncated: the tar ends in or after member {seen} ({e})"
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise AudioError(f"unreadable tar {url}: {e}") from e
    if inflating is not None and inflating.cut:
        return (
            src.n,
            f"truncated: the tar ends after member {seen} (its compressed stream stops early)",
        )
    if seen is not None and src.n < end + tarfile.BLOCKSIZE:
        return (
            src.n,
            f"truncated: the tar ends after member {seen} without its end-of-archive block",
        )
    return src.n, None


def tar_members(url: str, storage_options: dict | None = None) -> dict[str, bytes]:
    """Every complete regular member of a tar, read once per process and cached (small, per-shard
    tars). A tar cut short keeps the members before the cut; :func:`tar_cut` says why."""
    if url not in _TARS:
        if len(_TARS) > 4:
            _TARS.pop(next(iter(_TARS)))
        members: dict[str, bytes] = {}

        def keep(tf, m) -> None:
            fobj = tf.extractfile(m)
            assert fobj is not None
            members[m.name] = fobj.read()  # a member cut short raises, and is not kept

        _, _CUTS[url] = _scan_tar(url, storage_options, keep)
        _TARS[url] = members
    return _TARS[url]


def tar_cut(url: str, storage_options: dict | None = None) -> str | None:
    """Why a tar is cut short (None: complete), from the scan that read or indexed it."""
    if url not in _CUTS:
        tar_members(url, storage_options)
    return _CUTS[url]


def tar_index(url: str, storage_options: dict | None = None) -> dict[str, tuple[int, int]] | None:
    """Member name -> (offset, size) of an uncompressed tar, read once per process (the tar is
    streamed through, its data not kept); None for a compressed tar, which cannot be seeked.
    Only members whose data the file holds whole are listed."""
    if url.lower().endswith((".tar.gz", ".tgz")):
        return None
    if url not in _INDEX:
        if len(_INDEX) >= 64:
            _INDEX.pop(next(iter(_INDEX)))
        index: dict[str, tuple[int, int]] = {}
        try:
            size, _CUTS[url] = _scan_tar(
                url,
                storage_options,
                lambda tf, m: index.__setitem__(m.name, (m.offset_data, m.size)),
            )
            _INDEX[url] = {k: (o, n) for k, (o, n) in index.items() if o + n <= size}
        except AudioError as e:  # once per process, then for every member of it
            _INDEX[url] = e
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


def check_header(frames: int, rate: int, log: str) -> None:
    """AudioError for a header that cannot be trusted: a sample rate no recording has (a damaged
    header would plan hours of segments from seconds of audio), or a WAV whose data chunk says
    more than the file holds (a truncated file: libsndfile reads its readable part silently).
    ``log``: libsndfile's description of the header (``extra_info``). A data size of 0 or
    0xFFFFFFFF is what streaming writers leave when the length is unknown: not a truncation."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(
            f"implausible sample rate {rate} Hz in the header (accepted: {MIN_RATE}..{MAX_RATE} Hz)"
        )
    said = _DATA_SIZE.search(log)
    align = _BLOCK_ALIGN.search(log)
    if said and align and int(align.group(1)) > 0:
        claimed, held = int(said.group(1)), int(said.group(2))
        if claimed > held and claimed not in (0, 0xFFFFFFFF):
            raise AudioError(
                f"truncated: header says {claimed // int(align.group(1))} frames, file holds "
                f"{frames}"
            )


def audio_info(
    path: str, member: str | None = None, storage_options: dict | None = None
) -> tuple[int, int]:
    """(frames, sample rate) from the header; AudioError if missing, unreadable or implausible
    (see :func:`check_header`)."""
    try:
        info = sf.info(_source(path, member, storage_options))
    except FileNotFoundError:
        raise AudioError("file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(f"unreadable: {e}") from e
    check_header(int(info.frames), int(info.samplerate), info.extra_info)
    return int(info.frames), int(info.samplerate)


def read_audio(
    path: str,
    member: str | None = None,
    start: float = 0.0,
    end: float | None = None,
    storage_options: dict | None = None,
    max_seconds: float | None = None,
    declared: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``[start, end)`` seconds as float32 mono ``(N,)`` at the file's own rate.

    ``max_seconds``: read at most one frame more than that (enough to tell a longer file; a
    wrongly declared duration must not decode hours of audio). ``declared``: the whole file's
    length as a manifest gave it (segments were planned from it); a file of another length is
    an AudioError - planned from a shorter one, its tail would be lost without a trace."""
    try:
        with sf.SoundFile(_source(path, member, storage_options)) as f:
            sr = f.samplerate
            check_header(f.frames, sr, f.extra_info)
            if declared is not None and abs(f.frames / sr - declared) > DURATION_TOLERANCE_S:
                raise AudioError(
                    f"the manifest says {declared:g} s, the file holds {f.frames / sr:g} s "
                    "(write the manifest again with `audistill manifest`)"
                )
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
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise AudioError(f"cannot decode: {e}") from e
    return x.mean(axis=1), int(sr)


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """Resample mono float32 audio to 16 kHz (torchaudio's windowed-sinc resampler)."""
    if sr == SAMPLE_RATE:
        return np.ascontiguousarray(x, dtype=np.float32)
    import torchaudio  # only where resampling is needed: `shards` commands never load it

    y = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), sr, SAMPLE_RATE
    )
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


def load_segment(
    path: str,
    member: str | None,
    start: float,
    end: float | None,
    min_samples: int,
    storage_options: dict | None = None,
    max_samples: int | None = None,
    declared: float | None = None,
) -> np.ndarray:
    """One segment as float32 mono 16 kHz in [-1, 1], checked (AudioError on any problem).

    ``max_samples``: the longest segment the teachers take (their window). A planned segment is
    never longer, unless its length came from a manifest's ``duration`` that is wrong: that is
    an error, not audio silently cut to the window or features that cover only part of it.
    ``declared``: see :func:`read_audio`.

    Float audio beyond full scale is clipped here, before the teachers see it: the bank stores
    int16 (which cannot hold it), and the features must come from the samples the bank stores."""
    x, sr = read_audio(
        path,
        member,
        start,
        end,
        storage_options,
        None if max_samples is None else max_samples / SAMPLE_RATE,
        declared,
    )
    y = np.clip(check_audio(to_16k(x, sr), min_samples), -1.0, 1.0)
    if max_samples is not None and y.size > max_samples:
        raise AudioError(
            f"longer than the teachers' {max_samples / SAMPLE_RATE:g} s window, so longer than any "
            "planned "
            "segment (is a manifest's duration for this file wrong?)"
        )
    return y
