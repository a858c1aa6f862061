"""`audistill extract ...` commands."""

from __future__ import annotations

import typer

extract_app = typer.Typer(no_args_is_help=True, help="extract commands")


def register(app: typer.Typer) -> None:
    app.add_typer(extract_app, name="extract")
