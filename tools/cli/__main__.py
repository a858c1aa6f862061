"""``python -m audistill.tools.cli ...`` runs the ``audistill`` command."""

from audistill.tools.cli import main

main()
