"""The ``audistill`` command: a Typer app with one sub-app per area.

Every command is a thin wrapper around one library call. Errors that audistill raises on
purpose (bad input, broken shards, wrong configs) become one line on stderr and a non-zero exit;
``AUDISTILL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run audio teachers once into a feature bank; distill students from it.")

# Each area module defines `register(app)` and adds its commands (or a sub-app) to the root app.
_AREAS = (
    "audistill.tools.cli.shards",
    "audistill.tools.cli.extract",
    "audistill.tools.cli.train",
    "audistill.tools.cli.tools",
)

for _mod in _AREAS:
    importlib.import_module(_mod).register(app)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from audistill.shards.errors import BankError

    types: list[type[BaseException]] = [BankError, FileNotFoundError]
    for name in ("audistill.extract.errors", "audistill.train.errors"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        types.extend(getattr(mod, "USER_ERRORS", ()))
    return tuple(types)


def _click_error_types() -> tuple[type[BaseException], ...]:
    """Click's usage errors: typer >= 0.29 raises those of its bundled copy of click."""
    import click

    return (click.ClickException, *((typer.TyperException,) if hasattr(typer, "TyperException") else ()))


def _usage_line(e) -> int:
    """One line on stderr for a usage error (missing argument, unknown option ...); its exit code."""
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
        if os.environ.get("AUDISTILL_DEBUG") or not isinstance(e, _user_error_types()):
            raise
        print(f"audistill: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
