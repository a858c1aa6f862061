"""Checkpoints with everything a resume needs, and no pickle.

A checkpoint is a folder ``ckpt-STEP``: ``model.safetensors`` (student + heads),
``optim.safetensors`` (optimizer tensors and torch RNG states) and ``state.json`` (step, data
position, scheduler, optimizer groups, numpy/python RNG, the resolved config). ``state.json`` is
written last, so a folder without it is incomplete and ignored.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

STATE = "state.json"


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
    npst = {**npst, "state": {"key": npst["state"]["key"].tolist(), "pos": int(npst["state"]["pos"])}}
    return tensors, {"numpy": npst, "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npst = meta["numpy"]
    np.random.set_state({**npst, "state": {"key": np.asarray(npst["state"]["key"], dtype=np.uint32),
                                           "pos": npst["state"]["pos"]}})
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save(folder: Path, step: int, model: torch.nn.Module, opt, sched, data_pos: dict, config: dict,
         extra: dict | None = None, keep: int = 2) -> Path:
    folder = Path(folder)
    out = folder / f"ckpt-{step:08d}"
    tmp = folder / f".tmp-ckpt-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    ot, ometa = _flat_optim(opt)
    rt, rmeta = rng_state()
    save_file({**ot, **rt}, str(tmp / "optim.safetensors"))
    sched_sd = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    state = {"step": step, "data": data_pos, "optimizer": ometa, "scheduler": sched_sd, "rng": rmeta,
             "config": config, **(extra or {})}
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    for old in sorted(folder.glob("ckpt-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def latest(folder: Path) -> Path | None:
    done = [p for p in sorted(Path(folder).glob("ckpt-*")) if (p / STATE).exists()]
    return done[-1] if done else None


def read_state(ckpt: Path) -> dict:
    p = Path(ckpt) / STATE
    if not p.exists():
        raise CheckpointError(f"{ckpt} is not a checkpoint (no {STATE})")
    return json.loads(p.read_text())


def load_model_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    p = Path(ckpt) / "model.safetensors"
    if not p.exists():
        raise CheckpointError(f"{ckpt} has no model.safetensors")
    return load_file(str(p))


def restore(ckpt: Path, model: torch.nn.Module, opt, sched) -> dict:
    """Load everything into model / optimizer / scheduler / RNGs; returns state.json."""
    state = read_state(ckpt)
    model.load_state_dict(load_model_tensors(ckpt))
    tensors = load_file(str(Path(ckpt) / "optim.safetensors"))
    opt.load_state_dict(_unflat_optim({k: v for k, v in tensors.items() if k.startswith("state.")}, state["optimizer"]))
    sched.load_state_dict({**sched.state_dict(), **state["scheduler"]})
    set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
    return state
