"""Run configs: TOML or YAML files into frozen dataclasses, validated with every error at once.

Sections: [run], [student], [bank], [data], [augment], [distill], [optim], [log], and one
[[teachers]] table per teacher. ``overrides`` ("data.batch_seconds=200") apply on top of the
file. ``resolved(cfg)`` is the plain dict stored in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError


@dataclass(frozen=True)
class RunSection:
    name: str = "run"
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    stage: int = 1  # 1: layer-to-layer from SSL teachers; 2: final layer of supervised teachers
    init_from: str = ""  # stage 2: a stage-1 checkpoint folder
    resume: bool = True  # continue from out_dir/name/checkpoints/last when it exists
    online_teachers: str = (
        ""  # a teacher-spec file: run the teachers in the loop instead of the bank
    )
    # online mode: also read the bank's targets and log, every step, the loss of the same weights
    # against them (``loss_bank``): what the bank changes, apart from how two runs drift apart
    online_check_bank: bool = False
    compile: bool = (
        False  # torch.compile the student (measure with `audistill tools bench-train --compile`)
    )


@dataclass(frozen=True)
class StudentSection:
    size: str = "tiny"
    stride: int = 0  # 0 = the size's own; 2 -> 50 Hz, 4 -> 25 Hz
    dropout: float = 0.0


@dataclass(frozen=True)
class BankSection:
    root: str = ""
    storage_options: dict = field(default_factory=dict)
    shards: list = field(default_factory=list)  # [] = every shard not in val_shards
    val_shards: list = field(default_factory=list)


@dataclass(frozen=True)
class DataSection:
    crop_seconds: float = 5.0
    batch_seconds: float = (
        800.0  # audio seconds per optimizer update (global, over ranks and accumulation)
    )
    grad_accum: int = 1
    num_workers: int = 2
    shuffle_buffer: int = 256
    prefetch: int = 2


@dataclass(frozen=True)
class AugmentSection:
    gain_db: float = 0.0  # random gain in [-gain_db, +gain_db]; 0 = off
    noise_files: list = field(default_factory=list)  # wav/flac files mixed in; [] = off
    snr_db: list = field(default_factory=lambda: [5.0, 20.0])
    noise_prob: float = 0.5
    time_mask_seconds: float = 0.0  # zero one random span up to this long; 0 = off


@dataclass(frozen=True)
class TeacherSection:
    name: str = ""
    num_targets: int = 4  # K of the sparse map
    map: list = field(default_factory=list)  # explicit [[student_layer, teacher_layer], ...]
    final_only: bool = False  # stage 2: only the teacher's final layer
    fingerprint: str = ""  # expected weights fingerprint; "" = accept the bank's


@dataclass(frozen=True)
class DistillSection:
    omega: float = 10.0
    head_hidden: int = 0  # 0 = the student's width
    # Standardize each target channel with the bank's per-layer statistics (`audistill shards
    # stats`), so teachers of very different scales weigh alike in the L1 term.
    normalize_targets: bool = False


@dataclass(frozen=True)
class OptimSection:
    lr: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    max_steps: int = 100000
    clip: float = 1.0
    bf16: bool = True  # autocast on CUDA


@dataclass(frozen=True)
class LogSection:
    every: int = 10
    val_every: int = 1000
    ckpt_every: int = 1000
    tensorboard: bool = True


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    student: StudentSection = field(default_factory=StudentSection)
    bank: BankSection = field(default_factory=BankSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    teachers: tuple = ()
    distill: DistillSection = field(default_factory=DistillSection)
    optim: OptimSection = field(default_factory=OptimSection)
    log: LogSection = field(default_factory=LogSection)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name


_SECTIONS = {
    "run": RunSection,
    "student": StudentSection,
    "bank": BankSection,
    "data": DataSection,
    "augment": AugmentSection,
    "teachers": TeacherSection,
    "distill": DistillSection,
    "optim": OptimSection,
    "log": LogSection,
}


def _section(cls, raw, where: str, errors: list[str]):
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a table, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in known:
            errors.append(f"{where}.{k}: unknown key (known: {', '.join(sorted(known))})")
    vals = {}
    for k, v in raw.items():
        if k not in known:
            continue
        want = hints[k]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
        if not ok:
            errors.append(f"{where}.{k}: expected {want.__name__}, got {v!r}")
            continue
        vals[k] = v
    return cls(**vals)


def _check(cfg: RunConfig, errors: list[str]) -> None:
    from .sizes import SIZES

    def need(cond: bool, msg: str) -> None:
        if not cond:
            errors.append(msg)

    _check_finite(cfg, errors)
    need(
        cfg.student.size.lower() in SIZES,
        f"student.size: unknown {cfg.student.size!r} (known: {', '.join(SIZES)})",
    )
    need(0 <= cfg.student.dropout < 1, f"student.dropout: in [0, 1), got {cfg.student.dropout}")
    need(
        DEVICE.fullmatch(cfg.run.device) is not None,
        f"run.device: auto, cpu, mps, cuda or cuda:N, got {cfg.run.device!r}",
    )
    need(
        cfg.data.prefetch >= 1 or cfg.data.num_workers == 0,
        f"data.prefetch: must be >= 1 with data.num_workers > 0, got {cfg.data.prefetch}",
    )
    need(
        cfg.optim.clip >= 0,
        f"optim.clip: a gradient-norm limit > 0, or 0 for none; got {cfg.optim.clip}",
    )
    need(
        cfg.optim.weight_decay >= 0,
        f"optim.weight_decay: must be >= 0, got {cfg.optim.weight_decay}",
    )
    need(
        len(cfg.optim.betas) != 2 or all(_number(b) and 0 <= b < 1 for b in cfg.optim.betas),
        f"optim.betas: two numbers in [0, 1), got {cfg.optim.betas}",
    )
    need(
        cfg.augment.gain_db >= 0 and cfg.augment.time_mask_seconds >= 0,
        "augment.gain_db and augment.time_mask_seconds: must be >= 0",
    )
    need(
        cfg.distill.head_hidden >= 0, "distill.head_hidden: must be >= 0 (0 = the student's width)"
    )
    need(cfg.student.stride in (0, 2, 4), "student.stride: 0, 2 or 4")
    need(bool(cfg.bank.root), "bank.root: required")
    need(
        not set(cfg.bank.shards) & set(cfg.bank.val_shards),
        "bank: a shard is both in shards and val_shards",
    )
    need(cfg.run.stage in (1, 2), "run.stage: 1 or 2")
    need(
        cfg.run.stage == 1 or bool(cfg.run.init_from),
        "run.init_from: stage 2 starts from a stage-1 checkpoint",
    )
    need(cfg.data.crop_seconds > 0, "data.crop_seconds: must be > 0")
    need(
        cfg.data.batch_seconds >= cfg.data.crop_seconds,
        "data.batch_seconds: must be >= data.crop_seconds",
    )
    need(cfg.data.grad_accum >= 1, "data.grad_accum: must be >= 1")
    need(cfg.data.num_workers >= 0, "data.num_workers: must be >= 0")
    need(cfg.data.shuffle_buffer >= 1, "data.shuffle_buffer: must be >= 1")
    need(len(cfg.augment.snr_db) == 2, "augment.snr_db: [low, high]")
    need(0 <= cfg.augment.noise_prob <= 1, "augment.noise_prob: in [0, 1]")
    need(cfg.distill.omega > 0, "distill.omega: must be > 0")
    need(cfg.optim.lr > 0, "optim.lr: must be > 0")
    need(cfg.optim.max_steps >= 1, "optim.max_steps: must be >= 1")
    need(
        0 <= cfg.optim.warmup_steps <= cfg.optim.max_steps, "optim.warmup_steps: in [0, max_steps]"
    )
    need(len(cfg.optim.betas) == 2, "optim.betas: two numbers")
    need(
        cfg.log.every >= 1 and cfg.log.val_every >= 1 and cfg.log.ckpt_every >= 1,
        "log: intervals must be >= 1",
    )
    need(len(cfg.teachers) >= 1, "teachers: at least one [[teachers]] table")
    names = [t.name for t in cfg.teachers]
    need(len(set(names)) == len(names), f"teachers: duplicate names in {names}")
    for i, t in enumerate(cfg.teachers):
        need(bool(t.name), f"teachers[{i}].name: required")
        need(t.num_targets >= 1, f"teachers[{i}].num_targets: must be >= 1")
        for pair in t.map:
            need(
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair),
                f"teachers[{i}].map: pairs [student_layer, teacher_layer], got {pair!r}",
            )


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_finite(cfg: RunConfig, errors: list[str]) -> None:
    """Every float setting (and every number in a float list) must be finite: inf and nan pass
    each range check written as a comparison and then train nothing (an lr of inf writes NaN)."""
    sections = {
        f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "teachers"
    }
    for name, sec in sections.items():
        for f in dataclasses.fields(sec):
            v = getattr(sec, f.name)
            values = v if isinstance(v, list) else [v]
            if any(isinstance(x, float) and not math.isfinite(x) for x in values):
                errors.append(f"{name}.{f.name}: must be finite, got {v}")


def set_dotted(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    d = raw
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {key}: {p} is not a table")
    d[parts[-1]] = value


def parse_value(text: str):
    """A --set value: TOML syntax when it parses (numbers, booleans, lists, quoted), else a
    string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def from_dict(raw: dict) -> RunConfig:
    errors: list[str] = []
    vals = {}
    for k, v in raw.items():
        if k not in _SECTIONS:
            errors.append(f"{k}: unknown section (known: {', '.join(_SECTIONS)})")
        elif k == "teachers":
            if not isinstance(v, list):
                errors.append("teachers: a list of [[teachers]] tables")
                continue
            vals[k] = tuple(
                _section(TeacherSection, t, f"teachers[{i}]", errors) for i, t in enumerate(v)
            )
        else:
            vals[k] = _section(_SECTIONS[k], v, k, errors)
    cfg = RunConfig(**vals)
    _check(cfg, errors)
    if errors:
        raise ConfigError(f"{len(errors)} config error(s): " + "; ".join(errors))
    return cfg


def read_raw(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from None


def load_config(path: str | Path, overrides: list[str] | dict | None = None) -> RunConfig:
    """Read a TOML/YAML run config, apply ``key=value`` overrides, validate everything at once."""
    raw = read_raw(path)
    items = (
        overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    )
    for k, v in items:
        set_dotted(raw, k, parse_value(v) if isinstance(v, str) else v)
    return from_dict(raw)


def _split(o: str) -> tuple[str, str]:
    if "=" not in o:
        raise ConfigError(f"--set {o!r}: expected key=value")
    k, v = o.split("=", 1)
    return k.strip(), v.strip()


def resolved(cfg: RunConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["teachers"] = [dataclasses.asdict(t) for t in cfg.teachers]
    return json.loads(json.dumps(d))
