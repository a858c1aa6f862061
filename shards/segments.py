"""Segments: the unit everything in a bank is keyed by, and the ids that name them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

from .errors import UnsafeKeyError

SAMPLE_RATE = 16_000
DOMAINS = ("speech", "music", "sound", "unknown")

# Safe for file names, tar members, WebDataset grouping (which splits on the first dot) and
# S3 keys: letters, digits, '_' and '-', starting with a letter or digit.
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


def check_key(key: str, what: str = "key") -> str:
    """Return ``key`` if it is safe as a tar / WebDataset / file key, else raise UnsafeKeyError."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise UnsafeKeyError(
            f"{what} {key!r} is not a safe key: use 1-200 of [A-Za-z0-9_-], starting with a "
            "letter or digit (no dots, no path separators)"
        )
    return key


def make_segment_id(source: str, start: float = 0.0, end: float | None = None) -> str:
    """A stable id for ``source`` between ``start`` and ``end`` seconds.

    Readable stem (sanitized file name) + 12 hex digits of sha1 over the source and the offsets
    in whole milliseconds, so the same input gives the same id on every machine and run.
    """
    stem = source.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = _UNSAFE_RUN.sub("_", stem).strip("_-")[:48] or "seg"
    if not stem[0].isalnum():
        stem = "s" + stem
    start_ms = int(round(start * 1000))
    end_ms = -1 if end is None else int(round(end * 1000))
    # surrogateescape: a file name that is not UTF-8 (os.scandir keeps its bytes as surrogates)
    digest = hashlib.sha1(
        f"{source}\x00{start_ms}\x00{end_ms}".encode(errors="surrogateescape")
    ).hexdigest()[:12]
    return f"{stem}-{start_ms:09d}-{digest}"


@dataclass(frozen=True)
class Segment:
    """One stretch of audio in the bank (16 kHz mono once stored)."""

    id: str
    source: str
    start: float = 0.0
    end: float | None = None
    domain: str = "unknown"
    dataset: str = ""
    num_samples: int = 0

    def __post_init__(self) -> None:
        check_key(self.id, "segment id")

    @property
    def seconds(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Segment:
        return cls(
            id=d["id"],
            source=d.get("source", ""),
            start=float(d.get("start", 0.0)),
            end=None if d.get("end") is None else float(d["end"]),
            domain=d.get("domain", "unknown"),
            dataset=d.get("dataset", ""),
            num_samples=int(d.get("num_samples", 0)),
        )
