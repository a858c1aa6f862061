"""What a demo folder's finished stages were made from, so a re-run reuses exactly those.

A stage (the corpus, a bank, one student's training, one probe) is recorded in
``OUT/stages/NAME.json`` once it has finished, with its *key*: every input that determines its
output (the options it used and the keys of the stages it was made from). A later run reuses it only
when its key is this run's; otherwise it is made again, and the run says why. So ``audistill demo
--full --out d`` after ``audistill demo --out d`` builds the larger corpus instead of reporting the
small one under the full profile's name, and a run that was interrupted (a CPU-night run stopped at
hour three) starts again at the first stage it had not finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def plain(value):
    """``value`` as JSON reads it back (tuples as lists, paths as strings, numpy scalars as
    numbers): a reused stage and a freshly made one give the same objects."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


class Stages:
    """The finished stages of one demo folder (``OUT/stages/``)."""

    def __init__(self, out: Path, say: Callable[[str], None]):
        self.dir = Path(out) / "stages"
        self.say = say
        self.reused: list[str] = []  # the stages this run took from an earlier one

    def _path(self, name: str) -> Path:
        return self.dir / f"{name.replace('/', '_')}.json"

    def reuse(self, name: str, key, what: str) -> tuple[bool, object]:
        """``(True, result)`` when stage ``name`` finished with this ``key``; ``(False, None)``
        otherwise, saying why when it finished with another key (``what`` names it)."""
        path = self._path(name)
        if not path.exists():
            return False, None
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            self.say(f"  {what}: its stage record {path} is unreadable: making it again")
            return False, None
        key = plain(key)
        if rec.get("key") == key:
            self.say(f"  {what}: reused (made with the same inputs)")
            self.reused.append(name)
            return True, rec.get("result")
        self.say(
            f"  {what}: made from other inputs ({_changed(rec.get('key'), key)}): making it again"
        )
        return False, None

    def done(self, name: str, key, result=None):
        """Record stage ``name`` as finished with ``key``; returns ``result`` as a reuse would."""
        self.dir.mkdir(parents=True, exist_ok=True)
        result = plain(result)
        path = self._path(name)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"key": plain(key), "result": result}))
        os.replace(tmp, path)
        return result

    def forget(self, name: str) -> None:
        """The stage is being made again: until it finishes, it is not finished."""
        self._path(name).unlink(missing_ok=True)


def _changed(old, new, prefix: str = "") -> str:
    """The leaves that differ between two keys, at most three, for a one-line reason."""
    diffs: list[str] = []

    def walk(a, b, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{at}.{k}" if at else str(k))
        elif a != b:
            diffs.append(at or "key")

    walk(old, new, prefix)
    shown = ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")
    return f"{shown} changed" if diffs else "changed"
