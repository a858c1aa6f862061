"""CPU training on a busy machine: how OpenMP's wait policy decides whether jobs that share the
cores slow each other down in proportion, or collapse.

libgomp's default lets a thread that waits at the end of a parallel region spin for a while before
it sleeps. On a machine whose cores are all taken, a spinning thread holds the core the thread it
waits for needs, so every parallel region of every job pays a scheduler quantum. The command
measures ``bench-train --step-only`` (the student's update on a held batch, so the loader plays no
part) as ``jobs`` concurrent processes and alone, under each policy, and prints steps/s per job and
in total. ``audistill`` itself sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment says
otherwise (``audistill.tools.cli.main``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from audistill.shards.devices import usable_cores
from audistill.tools.bench.common import emit
from audistill.tools.cli.options import JsonOpt

POLICIES = ("ACTIVE", "PASSIVE")


def _step_job(policy: str, size: str, seconds: float, steps: int) -> subprocess.Popen:
    code = (
        "from audistill.tools.cli.app import main; import sys; "
        "sys.argv = ['audistill', 'tools', 'bench-train', '--step-only', '--device', 'cpu', "
        f"'--size', {size!r}, '--step-seconds', '{seconds:g}', '--steps', '{steps}', '--json']; "
        "main()"
    )
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _steps_per_s(proc: subprocess.Popen) -> float:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench-train --step-only failed: {err.decode()[-500:]}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["rows"][0]["steps_per_s"])


def run_busy_bench(jobs: int, size: str, seconds: float, steps: int) -> dict:
    """Per policy: one job alone, then ``jobs`` at once; steps/s per job and in total."""
    rows = []
    for policy in POLICIES:
        alone = _steps_per_s(_step_job(policy, size, seconds, steps))
        t0 = time.perf_counter()
        procs = [_step_job(policy, size, seconds, steps) for _ in range(jobs)]
        each = [_steps_per_s(p) for p in procs]
        rows.append(
            {
                "policy": policy,
                "alone_steps_per_s": alone,
                "busy_steps_per_s": each,
                "busy_total_steps_per_s": sum(each),
                "busy_over_alone": sum(each) / alone,
                "busy_wall_s": time.perf_counter() - t0,
            }
        )
    by = {r["policy"]: r for r in rows}
    return {
        "jobs": jobs,
        "size": size,
        "batch_seconds": seconds,
        "steps": steps,
        "cores": usable_cores(),
        "rows": rows,
        "passive_over_active_busy": by["PASSIVE"]["busy_total_steps_per_s"]
        / by["ACTIVE"]["busy_total_steps_per_s"],
        "passive_over_active_alone": by["PASSIVE"]["alone_steps_per_s"]
        / by["ACTIVE"]["alone_steps_per_s"],
    }


def register(app: typer.Typer) -> None:
    @app.command("bench-busy")
    def bench_busy(
        jobs: Annotated[int, typer.Option("--jobs", help="Concurrent training jobs.")] = 2,
        size: Annotated[str, typer.Option("--size", help="Student size.")] = "mini",
        seconds: Annotated[float, typer.Option("--step-seconds", help="Batch seconds.")] = 16.0,
        steps: Annotated[int, typer.Option("--steps", help="Timed steps per job.")] = 30,
        json_out: JsonOpt = False,
    ) -> None:
        """CPU training steps/s alone and with other jobs on the cores, per OpenMP wait policy."""
        if jobs < 2 or steps < 1:
            typer.echo("audistill: error: --jobs must be 2+ and --steps 1+", err=True)
            raise typer.Exit(2)
        res = run_busy_bench(jobs, size, seconds, steps)
        table = Table(title=f"{jobs} concurrent CPU training jobs ({size}, {seconds:g} s batches)")
        for col in ("OMP_WAIT_POLICY", "alone steps/s", "each, busy", "total, busy", "busy/alone"):
            table.add_column(col, justify="right")
        for r in res["rows"]:
            table.add_row(
                r["policy"],
                f"{r['alone_steps_per_s']:.2f}",
                " ".join(f"{v:.2f}" for v in r["busy_steps_per_s"]),
                f"{r['busy_total_steps_per_s']:.2f}",
                f"{r['busy_over_alone']:.2f}",
            )
        emit(
            res,
            table,
            json_out,
            [
                f"PASSIVE / ACTIVE: {res['passive_over_active_busy']:.2f}x busy, "
                f"{res['passive_over_active_alone']:.2f}x alone"
            ],
        )
