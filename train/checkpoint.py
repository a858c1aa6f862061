"""Checkpoints with everything a resume needs, and no pickle.

A checkpoint is a folder ``ckpt-STEP``: ``model.safetensors`` (student + heads),
``optim.safetensors`` (optimizer tensors and torch RNG states) and ``state.json`` (step, data
position, scheduler, optimizer groups, numpy/python RNG, the resolved config). ``state.json`` is
written last, so a folder without it is incomplete and ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

STATE = "state.json"
TENSOR_FILES = ("model.safetensors", "optim.safetensors")
log = logging.getLogger(__name__)


def _flat_optim(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflat_optim(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("state."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for k, v in meta["scalars"].items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    npst = np.random.get_state(legacy=False)
    npst = {
        **npst,
        "state": {"key": npst["state"]["key"].tolist(), "pos": int(npst["state"]["pos"])},
    }
    return tensors, {"numpy": npst, "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npst = meta["numpy"]
    np.random.set_state(
        {
            **npst,
            "state": {
                "key": np.asarray(npst["state"]["key"], dtype=np.uint32),
                "pos": npst["state"]["pos"],
            },
        }
    )
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save(
    folder: Path,
    step: int,
    model: torch.nn.Module,
    opt,
    sched,
    data_pos: dict,
    config: dict,
    extra: dict | None = None,
    keep: int = 2,
) -> Path:
    folder = Path(folder)
    out = folder / f"ckpt-{step:08d}"
    tmp = folder / f".tmp-ckpt-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(tmp / "model.safetensors"),
    )
    ot, ometa = _flat_optim(opt)
    rt, rmeta = rng_state()
    save_file({**ot, **rt}, str(tmp / "optim.safetensors"))
    sched_sd = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    state = {
        "step": step,
        "data": data_pos,
        "optimizer": ometa,
        "scheduler": sched_sd,
        "rng": rmeta,
        "config": config,
        "files": {n: _sha256(tmp / n) for n in TENSOR_FILES},
        **(extra or {}),
    }
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    for old in sorted(folder.glob("ckpt-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def completed(folder: Path) -> list[Path]:
    """Checkpoint folders whose state.json was written (the last file of a save), oldest first."""
    return [p for p in sorted(Path(folder).glob("ckpt-*")) if (p / STATE).exists()]


def latest(folder: Path) -> Path | None:
    done = completed(folder)
    return done[-1] if done else None


def read_state(ckpt: Path) -> dict:
    p = Path(ckpt) / STATE
    if not p.exists():
        raise CheckpointError(f"{ckpt} is not a checkpoint (no {STATE})")
    try:
        state = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p} is unreadable or corrupt: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{p} is corrupt: no step")
    return state


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_files(ckpt: Path, state: dict) -> None:
    """The tensor files hash to what ``state.json`` recorded when they were written (checkpoints
    from before the record was kept are taken as they are)."""
    for name, digest in (state.get("files") or {}).items():
        p = Path(ckpt) / name
        if not p.exists():
            raise CheckpointError(f"{p} is missing")
        if _sha256(p) != digest:
            raise CheckpointError(
                f"{p} is corrupt (its sha256 differs from the one recorded in {STATE})"
            )


def _load(p: Path) -> dict[str, torch.Tensor]:
    if not p.exists():
        raise CheckpointError(f"{p} is missing")
    try:
        return load_file(str(p))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type on a bad file
        raise CheckpointError(f"{p} is unreadable or corrupt: {e}") from None


def load_model_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    return _load(Path(ckpt) / "model.safetensors")


def restore(ckpt: Path, model: torch.nn.Module, opt, sched) -> dict:
    """Load everything into model / optimizer / scheduler / RNGs; returns state.json. Every file
    is checked before anything is loaded."""
    state = read_state(ckpt)
    check_files(ckpt, state)
    weights, tensors = load_model_tensors(ckpt), _load(Path(ckpt) / "optim.safetensors")
    try:
        model.load_state_dict(weights)
        opt.load_state_dict(
            _unflat_optim(
                {k: v for k, v in tensors.items() if k.startswith("state.")}, state["optimizer"]
            )
        )
        sched.load_state_dict({**sched.state_dict(), **state["scheduler"]})
        set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
        (
            int(state["data"]["epoch"]),
            int(state["data"]["micro"]),
        )  # the loader's position is there too
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"{ckpt} does not fit this run or is corrupt: {type(e).__name__}: {e}"
        ) from None
    return state


def restore_latest(folder: Path, model: torch.nn.Module, opt, sched) -> tuple[Path, dict] | None:
    """Restore the newest checkpoint in ``folder`` that reads back whole; a corrupt one is skipped
    with a warning naming what is wrong, and the one before it is tried. None when there is no
    checkpoint; CheckpointError naming every problem when none is usable."""
    problems = []
    for ckpt in reversed(completed(folder)):
        try:
            return ckpt, restore(ckpt, model, opt, sched)
        except CheckpointError as e:
            log.warning("skipping checkpoint %s: %s", ckpt.name, e)
            problems.append(str(e))
    if problems:
        raise CheckpointError(f"no usable checkpoint in {folder}: " + "; ".join(problems))
    return None
