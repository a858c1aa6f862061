"""Option aliases shared by every command, so flags read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BankArg = Annotated[
    str,
    typer.Argument(help="Bank root: a local path or an fsspec URL (s3://, file://, http(s)://)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Output folder.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="torch device: auto, cpu, cuda, cuda:1 ...")
]

StorageOpt = Annotated[
    str,
    typer.Option(
        "--storage-options",
        help="fsspec storage options for URLs (bank, corpus, tars): a JSON object or @FILE.json, "
        "e.g. "
        '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'. Default: the AWS_* / '
        "fsspec environment.",
    ),
]


def parse_storage_options(text: str) -> dict | None:
    """``--storage-options``: a JSON object, or ``@FILE`` holding one (keeps secrets out of the
    shell history). Anything else is a one-line error."""
    import json

    from audistill.shards.errors import BankError

    if not text:
        return None
    where = "--storage-options"
    if text.startswith("@"):
        where = f"--storage-options file {text[1:]}"
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            raise BankError(f"{where}: cannot read it ({e.strerror})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BankError(f"{where} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise BankError(f"{where} must be a JSON object, not {type(value).__name__}")
    return value
