"""The ``audistill`` command: a Typer app with one sub-app per area."""
import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


def main() -> None:
    app()
