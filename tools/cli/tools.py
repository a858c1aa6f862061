"""`audistill tools ...`: benchmarks, demo corpus, probes.

Each area module below defines ``register(app)``, adding its commands to ``tools_app``.
"""

from __future__ import annotations

import typer

from audistill.tools.bench import busy, catalog, codecs, dask, extract, plan, reads, store, train
from audistill.tools.demo import corpus
from audistill.tools.probe import probes

tools_app = typer.Typer(no_args_is_help=True, help="Benchmarks, demo corpus, probes.")

for _area in (codecs, reads, extract, plan, dask, catalog, store, train, busy, corpus, probes):
    _area.register(tools_app)
