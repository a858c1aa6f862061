"""`audistill train ...`: distill students from a bank (no teacher loaded), export them.

    audistill train run CONFIG.toml [--set data.batch_seconds=200 ...]
    torchrun --nproc_per_node 8 $(which audistill) train run CONFIG.toml     # DDP
    audistill train check CONFIG.toml        # validate config + bank, print the targets
    audistill train export CKPT_DIR OUT_DIR  # student.safetensors + config.json
    audistill train upscale XLARGE_CKPT OUT  # XXLarge init: first 24 + last 24 blocks
    audistill train configs                  # the shipped configs

Shipped configs live in the package (``audistill/train/configs``); ``run`` also takes a bare
name such as ``base_stage1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from audistill.tools.cli.options import JsonOpt

train_app = typer.Typer(no_args_is_help=True, help="Distill students from a bank; export them.")

ConfigArg = Annotated[
    str, typer.Argument(help="Run config (TOML/YAML) or a shipped config's name, e.g. base_stage1.")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
]


def _config_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    from importlib.resources import files

    q = Path(str(files("audistill.train") / "configs")) / f"{name.removesuffix('.toml')}.toml"
    return q if q.exists() else p  # load_config reports the missing file


@train_app.command("run")
def run_cmd(
    config: ConfigArg,
    set_: SetOpt = None,
    stop_after: Annotated[
        int | None,
        typer.Option(
            "--stop-after",
            help="Stop after this many steps of this call (checkpointed; resumable).",
        ),
    ] = None,
) -> None:
    """Train a student from the bank; resumes from the run's last checkpoint when there is one."""
    from audistill.train.config import load_config
    from audistill.train.loop import train

    cfg = load_config(_config_path(config), set_ or [])
    out = train(cfg, stop_after=stop_after)
    if out["rank"] == 0:
        last = out["losses"][-1] if out["losses"] else float("nan")
        typer.echo(f"step {out['step']}  loss {last:.4f}  run {out['run_dir']}")


@train_app.command("check")
def check_cmd(config: ConfigArg, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Validate the config and check that the bank holds every teacher/layer it needs."""
    import torch

    from audistill.shards.segments import SAMPLE_RATE
    from audistill.train.config import load_config
    from audistill.train.loop import build

    cfg = load_config(_config_path(config), set_ or [])
    model, infos, shards, val = build(cfg, torch.device("cpu"))
    rows = [
        {
            "teacher": t.teacher,
            "student_layer": t.student_layer,
            "teacher_layer": t.teacher_layer,
            "teacher_hz": SAMPLE_RATE / infos[t.teacher].hop,
            "home": infos[t.teacher].home,
        }
        for t in model.heads.targets
    ]
    if as_json:
        typer.echo(
            json.dumps({"targets": rows, "train_shards": len(shards), "val_shards": len(val)})
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{cfg.run.name}: {cfg.student.size} student, {len(shards)} train / {len(val)} val "
        "shards"
    )
    for c in rows[0]:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    Console().print(table)


@train_app.command("export")
def export_cmd(
    ckpt: Annotated[
        str, typer.Argument(help="A checkpoint folder (runs/NAME/checkpoints/ckpt-N).")
    ],
    out: Annotated[str, typer.Argument(help="Output folder.")],
) -> None:
    """Write student.safetensors + config.json (load with audistill.train.export.load_student)."""
    from audistill.train.export import export

    typer.echo(str(export(ckpt, out)))


@train_app.command("upscale")
def upscale_cmd(
    src: Annotated[str, typer.Argument(help="XLarge checkpoint or exported folder.")],
    out: Annotated[str, typer.Argument(help="Output folder (an exported student).")],
    keep: Annotated[int, typer.Option("--keep", help="Blocks taken from each end.")] = 24,
) -> None:
    """Depth up-scaling: stack the first KEEP and the last KEEP blocks (XLarge 32 -> XXLarge 48)."""
    from audistill.train.export import upscale

    typer.echo(str(upscale(src, out, keep)))


@train_app.command("configs")
def configs_cmd() -> None:
    """List the shipped run configs."""
    from importlib.resources import files

    for p in sorted(Path(str(files("audistill.train") / "configs")).glob("*.toml")):
        typer.echo(f"{p.stem:20s} {p}")
