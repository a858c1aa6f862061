"""`audistill tools bench-dask`: extraction on a Dask LocalCluster, by task size.

The same corpus and WavLM-shaped model (random weights) run through ``extract_dask`` with tasks
of 1 shard and of ``--shards-per-task`` shards, alternately, ``--repeats`` times each, end to end
(planning, model loading and the cluster's start-up included, as a user waits for them). One
shard per task starts the decode workers for every shard and leaves the device idle while each
shard is written; a group overlaps them inside one task.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..cli.options import JsonOpt
from .common import emit
from .extract import make_corpus, make_model


def run_dask_bench(
    minutes: float = 12.0,
    shard_seconds: float = 60.0,
    sizes: tuple[int, ...] = (1, 8),
    repeats: int = 2,
    model: str = "tiny",
    device: str = "cpu",
    workers: int = 1,
) -> dict:
    from audistill.extract.dask_run import extract_dask
    from audistill.extract.run import ExtractConfig
    from audistill.extract.spec import TeacherSpec

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="audistill-bench-dask-") as tmp:
        root = Path(tmp)
        model_dir = make_model(model, root / "model")
        make_corpus(root / "corpus", minutes)
        spec = TeacherSpec(
            name="wavlm",
            source=str(model_dir),
            layers="sparse:4",
            dtype="fp32" if device == "cpu" else "bf16",
            codec="int8-delta",
        )
        cfg = ExtractConfig(shard_seconds=shard_seconds, device=device)
        runs: dict[int, list[float]] = {n: [] for n in sizes}
        shards = seconds = 0.0
        for _ in range(repeats):
            for n in sizes:
                shutil.rmtree(root / "bank", ignore_errors=True)
                t0 = time.perf_counter()
                s = extract_dask(
                    [str(root / "corpus")],
                    [spec],
                    str(root / "bank"),
                    cfg,
                    workers=workers,
                    shards_per_task=n,
                )
                wall = time.perf_counter() - t0
                if s.failed or not s.shards_run:
                    raise RuntimeError(
                        f"{n} shards per task: {s.failed} segments failed, {s.shards_run} shards "
                        "run"
                    )
                shards, seconds = s.shards_run, s.seconds
                runs[n].append(seconds / wall)
    best = {n: max(v) for n, v in runs.items()}
    return {
        "minutes": minutes,
        "shard_seconds": shard_seconds,
        "shards": shards,
        "model": model,
        "device": device,
        "workers": workers,
        "audio_s_per_s": runs,
        "best": best,
        "ratio_vs_one": {n: best[n] / best[sizes[0]] for n in sizes},
    }


def register(app: typer.Typer) -> None:
    @app.command("bench-dask")
    def bench_dask(
        minutes: Annotated[float, typer.Option(help="Minutes of audio.")] = 12.0,
        shard_seconds: Annotated[
            float, typer.Option("--shard-seconds", help="Audio per shard (s).")
        ] = 60.0,
        shards_per_task: Annotated[
            int, typer.Option("--shards-per-task", help="The grouped task size.")
        ] = 8,
        repeats: Annotated[int, typer.Option(help="Runs of each size, alternating.")] = 2,
        model: Annotated[str, typer.Option(help="tiny | base | large (WavLM shapes).")] = "tiny",
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        workers: Annotated[int, typer.Option(help="LocalCluster workers on CPU.")] = 1,
        json_out: JsonOpt = False,
    ) -> None:
        """Dask extraction end to end, one shard per task against groups of shards."""
        r = run_dask_bench(
            minutes, shard_seconds, (1, shards_per_task), repeats, model, device, workers
        )
        t = Table("shards per task", "audio s / s (best)", "every run", "vs 1 per task")
        for n, v in r["audio_s_per_s"].items():
            t.add_row(
                str(n),
                f"{r['best'][n]:.0f}",
                ", ".join(f"{x:.0f}" for x in v),
                f"{r['ratio_vs_one'][n]:.2f}x",
            )
        emit(
            r,
            t,
            json_out,
            [
                f"{minutes:g} min of audio in {r['shards']} shards of {shard_seconds:g} s, {model} "
                f"WavLM shape on {device}, {workers} worker(s); end to end (cluster start-up "
                "included)"
            ],
        )
