"""What a demo folder's finished stages were made from, so a re-run reuses exactly those.

A stage (the corpus, a bank, one student's training, one probe) is recorded in
``OUT/stages/NAME.json`` once it has finished, with its *key* and a *made* id. The key holds every
input that determines the stage's output: the options it used, a fingerprint of the audistill code
that computes it and the versions of the libraries its numbers depend on (``code_of``), and the
made ids of the stages it was made from. A made id is new each time a stage is made, so remaking
anything upstream (a re-extracted bank) invalidates everything downstream of it even when the
upstream options did not change. A later run reuses a stage only when its key is this run's and
its output is still there; otherwise it is made again, and the run says why. So ``audistill demo
--full --out d`` after ``audistill demo --out d`` builds the larger corpus instead of reporting the
small one under the full profile's name, a fixed probe re-probes without retraining, and a run that
was interrupted (a CPU-night run stopped at hour three) starts again at the first stage it had not
finished.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import uuid
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from audistill.shards.fs import BankFS

# the libraries whose versions can change a stage's numbers
LIBRARIES = ("numpy", "torch", "torchaudio", "transformers", "torchfcpe", "torchcrepe", "scipy")


def plain(value):
    """``value`` as JSON reads it back (tuples as lists, paths as strings, numpy scalars as
    numbers): a reused stage and a freshly made one give the same objects."""
    return json.loads(json.dumps(value, default=json_default))


def json_default(o):
    """``json.dumps``'s ``default`` for what the demo's results hold (numpy numbers and
    arrays, paths)."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


@functools.cache
def code_of(*modules: str, skip: tuple[str, ...] = ()) -> dict:
    """What a stage's numbers depend on besides its options: a SHA-256 over the source of the
    audistill ``modules`` that compute it (a package stands for all its ``.py`` files, less the
    file names in ``skip``) and the installed versions of ``LIBRARIES``."""
    h = hashlib.sha256()
    for name in modules:
        path = Path(importlib.import_module(f"audistill.{name}").__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            if f.name not in skip:
                h.update(f"{name}:{f.relative_to(path.parent).as_posix()}\n".encode())
                h.update(f.read_bytes())
    libs = {}
    for lib in LIBRARIES:
        try:
            libs[lib] = version(lib)
        except PackageNotFoundError:
            libs[lib] = None
    return {"code": h.hexdigest()[:16], "libraries": libs}


class Stages:
    """The finished stages of one demo folder (``OUT/stages/``); with ``fresh``, none is."""

    def __init__(self, out: Path, say: Callable[[str], None], fresh: bool = False):
        self.dir = Path(out) / "stages"
        self.say = say
        self.fresh = fresh
        self.reused: list[str] = []  # the stages this run took from an earlier one
        self._made: dict[str, str] = {}  # stage -> the made id it has in this run

    def _path(self, name: str) -> Path:
        return self.dir / f"{name.replace('/', '_')}.json"

    def made(self, name: str) -> str:
        """The made id of stage ``name``, finished or reused in this run (a later stage's key
        holds it)."""
        return self._made[name]

    def reuse(
        self,
        name: str,
        key,
        what: str,
        output: Path | None = None,
        valid: Callable[[object], bool] | None = None,
    ) -> tuple[bool, object]:
        """``(True, result)`` when stage ``name`` finished with this ``key`` and its ``output``
        (a file or folder it made) is still there and ``valid(result)`` holds; ``(False, None)``
        otherwise, saying why when something was there before (``what`` names the stage)."""
        path = self._path(name)
        if self.fresh or not path.exists():
            if not self.fresh and output is not None and output.exists():
                self.say(f"  {what}: no record of what made {output.name}: making it again")
            return False, None
        try:
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict) or "made" not in rec:
                raise ValueError("not a stage record")
        except (OSError, ValueError):
            self.say(f"  {what}: its stage record {path} is unreadable: making it again")
            return False, None
        key = plain(key)
        if rec.get("key") != key:
            why = _changed(rec.get("key"), key)
            self.say(f"  {what}: made from other inputs ({why}): making it again")
            return False, None
        result = rec.get("result")
        if (output is not None and not output.exists()) or (
            valid is not None and not valid(result)
        ):
            self.say(f"  {what}: recorded as made, but its output is gone: making it again")
            return False, None
        self.say(f"  {what}: reused (made with the same inputs)")
        self.reused.append(name)
        self._made[name] = rec["made"]
        return True, result

    def done(self, name: str, key, result=None):
        """Record stage ``name`` as finished with ``key`` (a new made id); returns ``result`` as
        a reuse would."""
        result = plain(result)
        made = uuid.uuid4().hex[:12]
        record = {"key": plain(key), "made": made, "result": result}
        BankFS(str(self.dir)).write_bytes_atomic(self._path(name).name, json.dumps(record).encode())
        self._made[name] = made
        return result

    def forget(self, name: str) -> None:
        """The stage is being made again: until it finishes, it is not finished."""
        self._path(name).unlink(missing_ok=True)
        self._made.pop(name, None)


def _changed(old, new) -> str:
    """The leaves that differ between two keys, at most three, for a one-line reason."""
    diffs: list[str] = []

    def walk(a, b, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{at}.{k}" if at else str(k))
        elif a != b:
            diffs.append(at or "key")

    walk(old, new, "")
    shown = ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")
    return f"{shown} changed" if diffs else "changed"
