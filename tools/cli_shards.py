"""`audistill shards ...` commands."""

from __future__ import annotations

import typer

shards_app = typer.Typer(no_args_is_help=True, help="shards commands")


def register(app: typer.Typer) -> None:
    app.add_typer(shards_app, name="shards")
