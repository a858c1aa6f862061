"""The shard plan: a deterministic function of the corpus. A shard is the unit of work.

Segments keep the corpus order and are cut into shards of about ``shard_seconds`` of audio (and
at most ``shard_segments`` segments). A shard's name is its index plus a digest of its segment
ids, so a changed corpus never silently reuses the name of a committed shard with other content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from audistill.shards.segments import SAMPLE_RATE

from .corpus import SegmentRef


@dataclass(frozen=True)
class ShardPlan:
    name: str
    segments: tuple[SegmentRef, ...]

    @property
    def seconds(self) -> float:
        return sum(s.num_samples for s in self.segments) / SAMPLE_RATE


def make_plan(segments: list[SegmentRef], shard_seconds: float = 3600.0, shard_segments: int = 10000,
              prefix: str = "shard") -> list[ShardPlan]:
    groups: list[list[SegmentRef]] = []
    cur: list[SegmentRef] = []
    acc = 0
    limit = int(shard_seconds * SAMPLE_RATE)
    for s in segments:
        if cur and (acc + s.num_samples > limit or len(cur) >= shard_segments):
            groups.append(cur)
            cur, acc = [], 0
        cur.append(s)
        acc += s.num_samples
    if cur:
        groups.append(cur)
    out = []
    for i, g in enumerate(groups):
        digest = hashlib.sha1("\n".join(s.id for s in g).encode()).hexdigest()[:8]
        out.append(ShardPlan(f"{prefix}-{i:06d}-{digest}", tuple(g)))
    return out


def slice_plan(plan: list[ShardPlan], num_workers: int = 1, worker_index: int = 0) -> list[ShardPlan]:
    """The shards worker ``worker_index`` of ``num_workers`` runs (round robin: every shard once)."""
    if num_workers < 1 or not 0 <= worker_index < num_workers:
        raise ValueError(f"need 0 <= worker_index < num_workers, got {worker_index} of {num_workers}")
    return plan[worker_index::num_workers]


def plan_summary(plan: list[ShardPlan]) -> dict:
    per_domain: dict[str, float] = {}
    for sh in plan:
        for s in sh.segments:
            per_domain[s.domain] = per_domain.get(s.domain, 0.0) + s.num_samples / SAMPLE_RATE
    return {"shards": len(plan), "segments": sum(len(s.segments) for s in plan),
            "hours_per_domain": {d: v / 3600 for d, v in sorted(per_domain.items())},
            "hours": sum(per_domain.values()) / 3600}
