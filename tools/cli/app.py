"""The ``audistill`` command: the root Typer app, each area's commands added to it explicitly.

Every command is a thin wrapper around one library call. Errors that audistill raises on
purpose (bad input, broken shards, wrong configs) become one line on stderr and a non-zero exit;
``AUDISTILL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from audistill.extract.errors import USER_ERRORS as EXTRACT_ERRORS
from audistill.shards.errors import BankError
from audistill.tools.cli import extract, shards, tools, train
from audistill.tools.demo import run as demo
from audistill.train.errors import USER_ERRORS as TRAIN_ERRORS

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run audio teachers once into a feature bank; distill students from it.",
)

app.add_typer(shards.shards_app, name="shards")
extract.register(app)  # root commands: extract, plan, manifest
app.add_typer(train.train_app, name="train")
app.add_typer(tools.tools_app, name="tools")
demo.register(app)  # root command: demo, the main job

# Raised on purpose for bad input, broken shards, wrong configs: one line on stderr, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    BankError,
    FileNotFoundError,
    *EXTRACT_ERRORS,
    *TRAIN_ERRORS,
)


def _click_error_types() -> tuple[type[BaseException], ...]:
    """Click's usage errors: typer >= 0.29 raises those of its bundled copy of click."""
    import click

    return (
        click.ClickException,
        *((typer.TyperException,) if hasattr(typer, "TyperException") else ()),
    )


def _usage_line(e) -> int:
    """One line on stderr for a usage error (missing argument, unknown option ...); its exit
    code."""
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    print(f"audistill: error: {e.format_message()}{hint}", file=sys.stderr)
    return int(getattr(e, "exit_code", 2) or 2)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("audistill: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - mapped to a one-line message below
        if isinstance(e, _click_error_types()):
            sys.exit(_usage_line(e))
        if os.environ.get("AUDISTILL_DEBUG") or not isinstance(e, USER_ERRORS):
            raise
        print(f"audistill: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
