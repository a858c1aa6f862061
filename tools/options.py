"""Option aliases shared by every command, so flags read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BankArg = Annotated[str, typer.Argument(help="Bank root: a local path or an fsspec URL (s3://, file://, http(s)://).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device: auto, cpu, cuda, cuda:1 ...")]
