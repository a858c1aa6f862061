"""`audistill extract CORPUS... --teachers SPEC --bank BANK`: every teacher once over a corpus.

A thin wrapper around :func:`audistill.extract.run.extract` (or the Dask coordinator); it only
parses flags, draws the progress bar and prints the summary table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from audistill.tools.cli.options import DeviceOpt, JsonOpt, StorageOpt, parse_storage_options

# the corpus and planning options extract, plan and manifest share
CorpusArg = Annotated[
    list[str],
    typer.Argument(help="Corpus inputs: folders, .jsonl/.json/.csv manifests, .tar shards."),
]
DomainOpt = Annotated[str, typer.Option("--domain", help="Domain of folder inputs.")]
DomainMapOpt = Annotated[
    list[str], typer.Option("--domain-map", help="FOLDER=DOMAIN (repeatable).")
]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="Dataset name for folder/tar inputs.")]
MaxSecondsOpt = Annotated[float, typer.Option("--max-seconds", help="Longest segment (s).")]
ShardHoursOpt = Annotated[float, typer.Option("--shard-hours", help="Audio per shard (h).")]
OutsideOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside-root",
        help="Manifests may name local files outside their own folder (../, absolute paths).",
    ),
]


def _hours(per_domain: dict[str, float]) -> str:
    return ", ".join(f"{d} {h:.3f} h" for d, h in per_domain.items())


def _domain_map(pairs: list[str]) -> dict[str, str]:
    from audistill.extract.errors import ExtractError

    out = {}
    for p in pairs:
        if "=" not in p:
            raise ExtractError(f"--domain-map takes FOLDER=DOMAIN, not {p!r}")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def _progress_factory(console):
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    def make(total_segments: int, total_seconds: float):
        bar = Progress(
            TextColumn("extract"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} segments"),
            TextColumn("{task.fields[hours]:.3f} h audio"),
            TextColumn("RTF x{task.fields[rtf]:.1f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        task = bar.add_task("extract", total=total_segments, hours=0.0, rtf=0.0)
        state = {"t0": time.perf_counter(), "sec": 0.0}
        bar.start()

        def update(n: int, seconds: float) -> None:
            state["sec"] += seconds
            wall = max(1e-6, time.perf_counter() - state["t0"])
            bar.update(task, advance=n, hours=state["sec"] / 3600, rtf=state["sec"] / wall)
            if bar.tasks[0].completed >= total_segments:
                bar.stop()

        update.stop = bar.stop  # type: ignore[attr-defined]
        return update

    return make


def _table(summary, console) -> None:
    from rich.table import Table

    t = Table(
        title=f"extracted into {summary.bank}: {summary.segments_written} segments, "
        f"{summary.seconds / 3600:.3f} h, {summary.shards_run} shards run, "
        f"{summary.shards_skipped} already committed, {summary.failed} failed"
    )
    for col in ("teacher", "hours", "frames", "bytes", "bits/value", "audio s / s (forward)"):
        t.add_column(col, justify="right" if col != "teacher" else "left")
    for name, tot in summary.teachers.items():
        bpv = 8 * tot.bytes / tot.values if tot.values else float("nan")
        thr = tot.seconds / tot.forward_s if tot.forward_s else float("nan")
        t.add_row(
            name,
            f"{tot.seconds / 3600:.4f}",
            f"{tot.frames}",
            f"{tot.bytes}",
            f"{bpv:.2f}",
            f"{thr:.1f}",
        )
    console.print(t)
    if summary.stages and summary.run_s > 0:
        console.print(
            stages_line(summary.stages, summary.run_s)
            + f"; shards written by {summary.writer_kind} writers"
        )
    eff, pace = summary.padding_efficiency, summary.pace_sps()
    if eff is not None:
        console.print(
            f"batches: {eff:.1%} of the audio the device ran was real (the rest padding; length "
            "bucketing is per shard, so larger --shard-hours pads less)"
            + (
                f"; steady pace {pace:.1f} audio s/s (first to last shard committed)"
                if pace
                else ""
            )
        )


def stages_line(stages: dict[str, float], run_s: float) -> str:
    """Where the extraction loop's time went: the stage that dominates is the bottleneck
    (device_wait = the device; writers = compression/writing; loader = decoding; launch/collect =
    the host's own work)."""
    order = ("device_wait", "launch", "collect", "loader", "writers")
    parts = [f"{k} {stages[k]:.1f} s ({stages[k] / run_s:.0%})" for k in order if k in stages]
    return f"run {run_s:.1f} s: " + ", ".join(parts)


def _plan_table(plan: dict, console) -> None:
    from rich.table import Table

    doms = _hours(plan["hours_per_domain"])
    console.print(
        f"plan: {plan['shards']} shards, {plan['segments']} segments, {plan['hours']:.3f} h "
        f"({doms}); "
        f"segments up to {plan['segment_seconds']} s; {plan['unusable_inputs']} unusable inputs"
    )
    t = Table(title="estimated storage (codec parts before lossless compression: an upper bound)")
    for col in (
        "teacher",
        "hours",
        "frame rate",
        "dim",
        "layers",
        "bits/value",
        "bytes/layer",
        "bytes",
    ):
        t.add_column(col, justify="left" if col in ("teacher", "layers") else "right")
    for name, e in plan["teachers"].items():
        if "dim" not in e:
            t.add_row(
                name, f"{e['seconds'] / 3600:.3f}", "?", "?", "?", "?", "?", e.get("note", "?")
            )
            continue
        fitted = (
            e["bits_per_value"] is None
        )  # a codec fitted at the run: its size is not known before
        t.add_row(
            name,
            f"{e['seconds'] / 3600:.3f}",
            f"{e['frame_rate']:g}",
            str(e["dim"]),
            str(e["layers"]),
            "fitted" if fitted else f"{e['bits_per_value']:.1f}",
            "?" if fitted else f"{e['bytes_per_layer']:.3g}",
            "?" if fitted else f"{e['bytes']:.3g}",
        )
    console.print(t)
    for w in plan.get("warnings", []):
        console.print(f"[yellow]warning: {w}")


def extract_cmd(
    teachers: Annotated[
        str, typer.Option("--teachers", help="Teacher spec file (.toml or .yaml).")
    ],
    bank: Annotated[str, typer.Option("--bank", help="Bank root: local path or fsspec URL.")],
    corpus: Annotated[
        list[str] | None,
        typer.Argument(
            help="Corpus inputs: folders, .jsonl/.csv manifests, .tar shards (or --plan)."
        ),
    ] = None,
    plan_file: Annotated[
        str,
        typer.Option(
            "--plan",
            help="A plan file from `audistill plan` instead of CORPUS: slices read only their "
            "shards.",
        ),
    ] = "",
    layout: Annotated[
        str | None,
        typer.Option(
            "--layout",
            help="zarr or webdataset, for a new bank (default zarr); an existing bank keeps its "
            "own.",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and size estimates; run no model.")
    ] = False,
    domain: DomainOpt = "unknown",
    domain_map: DomainMapOpt = [],  # noqa: B006
    dataset: DatasetOpt = "",
    max_seconds: MaxSecondsOpt = 30.0,
    shard_hours: ShardHoursOpt = 1.0,
    batch_seconds: Annotated[
        float, typer.Option("--batch-seconds", help="Padded audio per batch (s).")
    ] = 200.0,
    loader_workers: Annotated[
        int | None,
        typer.Option(
            "--loader-workers",
            help="Decode processes (default: 2 on CPU, cores/3 up to 8 on CUDA).",
        ),
    ] = None,
    writers: Annotated[
        int, typer.Option("--writers", help="Shards written at once (0: auto).")
    ] = 0,
    writer_kind: Annotated[
        str, typer.Option("--writer-kind", help="auto (threads) | process | thread.")
    ] = "auto",
    max_failed: Annotated[
        float, typer.Option("--max-failed", help="Failed fraction above which the run exits 1.")
    ] = 0.01,
    num_workers: Annotated[
        int, typer.Option("--num-workers", help="Slices of the plan (SLURM arrays).")
    ] = 1,
    worker_index: Annotated[int, typer.Option("--worker-index", help="This process's slice.")] = 0,
    slice_wait_minutes: Annotated[
        float,
        typer.Option(
            "--slice-wait-minutes",
            help="Slices > 0 wait this long for slice 0 to register teachers and fit codecs.",
        ),
    ] = 60.0,
    scheduler: Annotated[
        str, typer.Option("--scheduler", help="Dask scheduler address (tcp://...).")
    ] = "",
    dask: Annotated[
        bool, typer.Option("--dask", help="Run shards on a Dask LocalCluster.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="LocalCluster workers on CPU (GPU: one per GPU).")
    ] = 2,
    shards_per_task: Annotated[
        int,
        typer.Option(
            "--shards-per-task",
            help="Dask: consecutive shards one task runs (decode start-up and writes overlap "
            "within it).",
        ),
    ] = 8,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow hub models' own code.")
    ] = False,
    storage_options: StorageOpt = "",
    allow_outside_root: OutsideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every teacher once over CORPUS into the bank (resumable; committed shards are
    skipped)."""
    from rich.console import Console

    from audistill.extract.run import ExtractConfig, check_failures, extract
    from audistill.extract.run import dry_run as plan_only
    from audistill.extract.spec import load_teacher_specs

    console = Console(stderr=as_json)
    specs = load_teacher_specs(teachers)
    cfg = ExtractConfig(
        layout=layout,
        device=device,
        max_seconds=max_seconds,
        shard_seconds=shard_hours * 3600,
        batch_seconds=batch_seconds,
        loader_workers=loader_workers,
        writers=writers,
        writer_kind=writer_kind,
        max_failed=max_failed,
        domain=domain,
        domain_map=_domain_map(domain_map),
        dataset=dataset,
        num_workers=num_workers,
        worker_index=worker_index,
        trust_remote_code=trust_remote_code,
        storage_options=parse_storage_options(storage_options),
        plan_file=plan_file or None,
        slice_wait_s=slice_wait_minutes * 60,
        allow_outside_root=allow_outside_root,
    )
    corpus = corpus or []
    if dry_run:
        plan = plan_only(corpus, specs, cfg)
        if as_json:
            print(json.dumps(plan))
        else:
            _plan_table(plan, console)
        return
    progress = None if as_json else _progress_factory(console)
    if scheduler or dask:
        from audistill.extract.dask_run import extract_dask

        summary = extract_dask(
            corpus,
            specs,
            bank,
            cfg,
            scheduler=scheduler or None,
            workers=workers,
            shards_per_task=shards_per_task,
            progress_factory=progress,
        )
    else:
        summary = extract(corpus, specs, bank, cfg, progress_factory=progress)
    if as_json:
        print(json.dumps(summary.to_json()))
    else:
        _table(summary, console)
    try:
        check_failures(summary, max_failed)
    except ValueError as e:
        console.print(f"[red]audistill: {e}")
        raise typer.Exit(1) from None


def manifest_cmd(
    corpus: CorpusArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The manifest to write (.jsonl).")],
    domain: DomainOpt = "unknown",
    domain_map: DomainMapOpt = [],  # noqa: B006
    dataset: DatasetOpt = "",
    probe_workers: Annotated[
        int, typer.Option("--probe-workers", help="Threads reading file headers.")
    ] = 16,
    storage_options: StorageOpt = "",
    allow_outside_root: OutsideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Read every file's length once and write a manifest with durations (same ids as CORPUS):
    `audistill extract` plans from it without opening a file, in every slice and re-run."""
    from rich.console import Console

    from audistill.extract.corpus import write_manifest

    console = Console(stderr=True)
    t0 = time.perf_counter()
    result = write_manifest(
        corpus,
        out,
        domain,
        _domain_map(domain_map),
        dataset,
        parse_storage_options(storage_options),
        probe_workers,
        allow_outside_root=allow_outside_root,
    )
    result["seconds"] = time.perf_counter() - t0
    errors = result["errors"]
    result["errors"] = errors[:100]
    if as_json:
        print(json.dumps(result))
        return
    console.print(
        f"wrote {out}: {result['items']} recordings, {result['hours']:.3f} h, in "
        f"{result['seconds']:.1f} s"
    )
    if errors:
        console.print(
            f"[yellow]{len(errors)} unreadable (kept without a duration: extract records them in "
            "the bank's "
            "errors), e.g.:"
        )
        for e in errors[:5]:
            console.print(f"  {e['file']}: {e['reason']}")


def plan_cmd(
    corpus: CorpusArg,
    teachers: Annotated[
        str, typer.Option("--teachers", help="Teacher spec file (their windows cut segments).")
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", help="The plan file to write (path or fsspec URL).")
    ],
    domain: DomainOpt = "unknown",
    domain_map: DomainMapOpt = [],  # noqa: B006
    dataset: DatasetOpt = "",
    max_seconds: MaxSecondsOpt = 30.0,
    shard_hours: ShardHoursOpt = 1.0,
    storage_options: StorageOpt = "",
    allow_outside_root: OutsideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Plan CORPUS once into a plan file: `audistill extract --plan FILE` then starts without
    reading the corpus, each slice reading only its own shards (no model is loaded here)."""
    from rich.console import Console

    from audistill.extract.run import ExtractConfig, plan_to_file
    from audistill.extract.spec import load_teacher_specs

    specs = load_teacher_specs(teachers)
    cfg = ExtractConfig(
        max_seconds=max_seconds,
        shard_seconds=shard_hours * 3600,
        domain=domain,
        domain_map=_domain_map(domain_map),
        dataset=dataset,
        storage_options=parse_storage_options(storage_options),
        allow_outside_root=allow_outside_root,
    )
    summary = plan_to_file(corpus, specs, cfg, out)
    if as_json:
        print(json.dumps(summary))
        return
    doms = _hours(summary["hours_per_domain"])
    Console().print(
        f"wrote {out}: {summary['shards']} shards, {summary['segments']} segments, "
        f"{summary['hours']:.3f} h ({doms}); {summary['unusable_inputs']} unusable inputs"
    )


def register(app: typer.Typer) -> None:
    app.command("extract")(extract_cmd)
    app.command("plan")(plan_cmd)
    app.command("manifest")(manifest_cmd)
