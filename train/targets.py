"""What the run distills, checked against the bank before anything trains."""

from __future__ import annotations

from dataclasses import dataclass

from audistill.shards.errors import MissingDataError
from audistill.shards.reader import BankReader

from .errors import BankMismatchError
from .heads import Target, sparse_map


@dataclass(frozen=True)
class TeacherInfo:
    name: str
    dim: int
    hop: float  # samples at 16 kHz per frame
    home: str
    layers: tuple  # teacher layers read from the bank


def plan_targets(
    teachers, catalog, student_depth: int, stage: int
) -> tuple[list[Target], dict[str, TeacherInfo]]:
    """Targets of every configured teacher; raises one BankMismatchError naming all problems."""
    problems, targets, infos = [], [], {}
    for t in teachers:
        rec = catalog.teachers.get(t.name)
        if rec is None:
            problems.append(
                f"teacher {t.name!r} (the bank has {sorted(catalog.teachers) or 'none'})"
            )
            continue
        if t.fingerprint and rec.fingerprint != t.fingerprint:
            problems.append(
                f"teacher {t.name!r} fingerprint {rec.fingerprint[:12] or '(none)'} "
                f"differs from the config's {t.fingerprint[:12]}"
            )
        depth = rec.num_layers - 1 if rec.num_layers else max(rec.layers)
        if t.map:
            pairs = [(int(a), int(b)) for a, b in t.map]
        elif stage == 2 or t.final_only:
            pairs = [(student_depth, depth)]
        else:
            pairs = sparse_map(student_depth, depth, t.num_targets)
        bad = [a for a, _ in pairs if not 0 <= a <= student_depth]
        if bad:
            problems.append(f"teacher {t.name!r}: student layers {bad} outside 0..{student_depth}")
        missing = sorted({b for _, b in pairs if b not in rec.layers})
        if missing:
            problems.append(f"teacher {t.name!r} layers {missing} (kept: {rec.layers})")
        targets += [Target(t.name, a, b) for a, b in pairs]
        infos[t.name] = TeacherInfo(
            t.name, rec.dim, rec.hop, rec.home_domain, tuple(sorted({b for _, b in pairs}))
        )
    if problems:
        raise BankMismatchError("the bank lacks what the config needs: " + "; ".join(problems))
    return targets, infos


def open_reader(bank, infos: dict[str, TeacherInfo], shards: list[str]) -> BankReader:
    """A reader of exactly the needed layers; a shard lacking one stops here with one message."""
    try:
        return BankReader(
            bank, teachers={n: list(i.layers) for n, i in infos.items()}, shards=shards, audio=True
        )
    except MissingDataError as e:
        raise BankMismatchError(f"the bank lacks what the config needs: {e}") from None
