"""`audistill tools ...`: benchmarks, demo corpus, probes, reports.

Each module listed in _MODULES defines `register(app)` adding its commands to `tools_app`.
"""

from __future__ import annotations

import importlib

import typer

tools_app = typer.Typer(no_args_is_help=True, help="Benchmarks, demo corpus, probes, reports.")

_MODULES: tuple[str, ...] = (
    "audistill.tools.bench.codecs",
    "audistill.tools.bench.reads",
    "audistill.tools.bench.extract",
    "audistill.tools.bench.plan",
    "audistill.tools.bench.dask",
    "audistill.tools.bench.catalog",
    "audistill.tools.bench.store",
    "audistill.tools.bench.train",
    "audistill.tools.demo.corpus",
    "audistill.tools.probe.probes",
)


def register(app: typer.Typer) -> None:
    for name in _MODULES:
        importlib.import_module(name).register(tools_app)
    app.add_typer(tools_app, name="tools")
    importlib.import_module("audistill.tools.demo.run").register(app)  # `audistill demo`, the main job
