"""The ``audistill`` command line: thin Typer wrappers around library calls, one module per area."""


def main() -> None:
    """The ``audistill`` console script (imported on call, so the area modules' option aliases in
    ``audistill.tools.cli.options`` load without the whole command tree)."""
    from audistill.tools.cli.app import main as run

    run()
