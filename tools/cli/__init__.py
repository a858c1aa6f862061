"""The ``audistill`` command line: thin Typer wrappers around library calls, one module per area."""

import os


def main() -> None:
    """The ``audistill`` console script (imported on call, so the area modules' option aliases in
    ``audistill.tools.cli.options`` load without the whole command tree).

    Before torch loads, OpenMP threads are told to sleep rather than spin while they wait, unless
    the environment already sets ``OMP_WAIT_POLICY``: with other jobs on the cores, spinning threads
    made two CPU trainings run 4.6x slower each instead of 2x (``audistill tools bench-busy``)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from audistill.tools.cli.app import main as run

    run()
