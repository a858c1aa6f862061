"""The shard plan: a deterministic function of the corpus. A shard is the unit of work.

Segments keep the corpus order and are cut into shards of about ``shard_seconds`` of audio (and
at most ``shard_segments`` segments). A shard's name is its index plus a digest of its segment
ids, so a changed corpus never silently reuses the name of a committed shard with other content;
a re-run meets the bank in :func:`exclude_committed`, so a changed corpus never stores a segment
twice either.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from audistill.shards.segments import SAMPLE_RATE

from .corpus import SegmentRef

if TYPE_CHECKING:
    from audistill.shards.bank import Bank

    from .spec import TeacherSpec


@dataclass(frozen=True)
class ShardPlan:
    """One shard of the plan: its name and its segments, stored packed.

    Every process holds the whole plan (a slice still plans the whole corpus), and a planned
    segment as Python objects costs ~650 bytes: 23 GB at 100k hours of 10 s clips, and decode
    workers forked from the process copy the pages they touch. Packed (canonical JSON rows,
    zlib), a shard costs tens of bytes a segment, decoded on use (~0.5 ms for 360 segments) into
    a small per-process cache; it pickles small to writer processes and Dask workers."""

    name: str
    packed: bytes  # zlib(JSON list of SegmentRef rows): deterministic, so equal plans compare equal
    count: int  # segments
    samples: int  # their planned 16 kHz samples

    @classmethod
    def of(cls, name: str, segments: Iterable[SegmentRef]) -> ShardPlan:
        segs = tuple(segments)
        rows = [
            [
                s.id,
                s.source,
                s.path,
                s.member,
                s.start,
                s.end,
                s.domain,
                s.dataset,
                s.num_samples,
                s.declared,
            ]
            for s in segs
        ]
        packed = zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 1)
        return cls(name, packed, len(segs), sum(s.num_samples for s in segs))

    @property
    def segments(self) -> tuple[SegmentRef, ...]:
        return _unpack(self.packed)

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


@lru_cache(
    maxsize=64
)  # the shards a run has in flight (decoding, computing, writing) and then some
def _unpack(packed: bytes) -> tuple[SegmentRef, ...]:
    return tuple(SegmentRef(*row) for row in json.loads(zlib.decompress(packed)))


def make_plan(
    segments: Iterable[SegmentRef],
    shard_seconds: float = 3600.0,
    shard_segments: int = 10000,
    prefix: str = "shard",
) -> list[ShardPlan]:
    """Shards of ``segments`` in order (streamed: each shard is packed as soon as it is full)."""
    out: list[ShardPlan] = []
    cur: list[SegmentRef] = []
    acc = 0
    limit = int(shard_seconds * SAMPLE_RATE)

    def close() -> None:
        digest = hashlib.sha1("\n".join(s.id for s in cur).encode()).hexdigest()[:8]
        out.append(ShardPlan.of(f"{prefix}-{len(out):06d}-{digest}", cur))

    for s in segments:
        if cur and (acc + s.num_samples > limit or len(cur) >= shard_segments):
            close()
            cur, acc = [], 0
        cur.append(s)
        acc += s.num_samples
    if cur:
        close()
    return out


def slice_plan(
    plan: Sequence[ShardPlan], num_workers: int = 1, worker_index: int = 0
) -> list[ShardPlan]:
    """The shards worker ``worker_index`` of ``num_workers`` runs (round robin: every shard
    once)."""
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise ValueError(
            f"need 0 <= worker_index < num_workers, got {worker_index} of {num_workers}"
        )
    return plan[worker_index::num_workers]


def plan_summary(plan: list[ShardPlan]) -> dict:
    per_domain: dict[str, float] = {}
    for sh in plan:
        for s in sh.segments:
            per_domain[s.domain] = per_domain.get(s.domain, 0.0) + s.num_samples / SAMPLE_RATE
    return {
        "shards": len(plan),
        "segments": sum(s.count for s in plan),
        "hours_per_domain": {d: v / 3600 for d, v in sorted(per_domain.items())},
        "hours": sum(per_domain.values()) / 3600,
    }


def _key(segment_id: str) -> int:
    """A 16-byte digest of a segment id: a set of them costs ~70 bytes a segment, not ~110."""
    return int.from_bytes(hashlib.blake2b(segment_id.encode(), digest_size=16).digest(), "little")


def committed_names(bank: Bank) -> list[str]:
    """Names of the shards committed in ``bank``, from one listing of ``commits/``."""
    if not bank.fs.exists("commits"):
        return []
    return [
        f[: -len(".json")]
        for f in bank.fs.listdir("commits")
        if f.endswith(".json") and not f.startswith(".")
    ]


def plan_names(plan: Sequence[ShardPlan]) -> list[str]:
    """The shard names of ``plan`` (a plan file gives them from its index, reading no shard)."""
    names = getattr(plan, "names", None)
    return names() if callable(names) else [sh.name for sh in plan]


def exclude_committed(bank: Bank, plan: Sequence[ShardPlan]) -> Sequence[ShardPlan]:
    """``plan`` less the segments the bank already holds under other shard names, plus those shards.

    A shard's name is a digest of its segments, so once the corpus changed (a file added, or one
    unreadable before now read) the shards after the change are planned under new names - with
    segments that shards of the earlier plan already hold. Those segments are dropped from the
    uncommitted shards (a shard left empty is dropped), so a segment id is stored at most once,
    whatever the plan. The earlier plan's shards are appended (their segments as this corpus
    has them; those it lost are left out), so a teacher added now covers them too, and a shard
    holding segments the corpus no longer has is refused for adding one (see ``plan_work``).

    Costs one listing of ``commits/`` when the plan names every committed shard (an unchanged
    corpus); otherwise one read of each foreign shard's segment table and a pass over the plan."""
    planned = set(plan_names(plan))
    committed = committed_names(bank)
    foreign = [n for n in committed if n not in planned]
    if not foreign:
        return plan
    unsynced = any(
        n not in bank.catalog.shards for n in foreign
    )  # committed after the catalog was saved
    records = bank.commit_records() if unsynced else bank.catalog.shards
    ids_of = {
        name: [
            _key(s.id) for s in bank.shard_reader(name, record=records[name], check="none").segments
        ]
        for name in foreign
    }
    held = {k for keys in ids_of.values() for k in keys}
    done = set(committed)
    refs: dict[int, SegmentRef] = {}
    out: list[ShardPlan] = []
    for sh in plan:
        keyed = [(_key(s.id), s) for s in sh.segments]
        refs.update((k, s) for k, s in keyed if k in held)
        if sh.name in done or not any(k in held for k, _ in keyed):
            out.append(sh)
            continue
        kept = [s for k, s in keyed if k not in held]
        if kept:
            out.append(ShardPlan.of(sh.name, kept))
    for name in foreign:
        out.append(ShardPlan.of(name, [refs[k] for k in ids_of[name] if k in refs]))
    return out


def plan_domains(shards: Iterable[ShardPlan]) -> set[str]:
    """The domains of the segments in ``shards``."""
    return {s.domain for sh in shards for s in sh.segments}


def idle_teachers(specs: Iterable[TeacherSpec], domains: Iterable[str]) -> list[str]:
    """A warning for each teacher whose ``domains`` match none of ``domains`` (the plan's): it
    would be registered in the bank and cover nothing. None when the plan is empty."""
    present = sorted(set(domains))
    if not present:
        return []
    return [
        f"teacher {s.name}: its domains {list(s.domains)} match no segment (the plan has "
        f"{present}); "
        "it covers nothing"
        for s in specs
        if s.domains and not set(s.domains) & set(present)
    ]
