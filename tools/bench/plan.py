"""`audistill tools bench-plan`: what planning a corpus costs before the first batch, per file.

Writes ``--files`` short flac files in a temporary folder (200 a speaker folder) and, in one run:

* reads every length from the files (what ``extract`` does on a folder), in this thread and with
  ``--probe-workers`` threads, on this disk and with ``--latency-ms`` added to every open (a
  network filesystem or object store, simulated: the threads overlap the waiting);
* writes a manifest with durations once (``audistill manifest``) and plans from it, opening no
  file;
* a slice's start: planning from the manifest against reading its shards from a plan file
  (``audistill plan``);
* the memory the plan holds per segment (tracemalloc, a manifest of 2-17 s clips in 1 h
  shards): packed shards as ``extract`` keeps them, next to the same segments as Python objects
  (what a plan was before packing), and the peak while planning.

Reported per file / per segment, so the figures scale to a corpus: 100k hours of 10 s clips is 36
million files.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Annotated

import numpy as np
import soundfile as sf
import typer
from rich.table import Table

from audistill.shards.segments import SAMPLE_RATE

from ..cli.options import JsonOpt
from .common import emit

SLICES = 10  # the slice whose start is timed: one of ten


def _write_files(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(3200) * 0.1).astype(np.float32)
    for i in range(n):
        d = root / f"spk{i // 200:05d}"
        if i % 200 == 0:
            d.mkdir(parents=True)
        sf.write(d / f"utt{i:08d}.flac", x[: 1600 + i % 1600], SAMPLE_RATE)


def _plan_us(inputs: list[str], files: int, probe_workers: int) -> float:
    from audistill.extract.corpus import iter_items, iter_segments
    from audistill.extract.plan import make_plan

    errors: list[dict] = []
    t0 = time.perf_counter()
    plan = make_plan(iter_segments(iter_items(inputs), errors, probe_workers=probe_workers), 3600)
    took = time.perf_counter() - t0
    if errors or sum(sh.count for sh in plan) != files:
        raise RuntimeError(f"planning lost files: {errors[:3]}")
    return took / files * 1e6


def _memory(folder: Path, segments: int) -> dict:
    """Bytes per segment held by the packed plan and by the same segments as objects, and the
    peak while planning: a manifest of ``segments`` clips of 2-17 s with durations declared (so
    no file is needed), in 1 h shards as ``extract`` plans them."""
    from audistill.extract.corpus import iter_items, iter_segments
    from audistill.extract.plan import _unpack, make_plan

    manifest = folder / "memory.jsonl"
    with open(manifest, "w") as f:
        for i in range(segments):
            f.write(
                json.dumps(
                    {
                        "id": f"corpus/spk{i // 200:05d}/utt{i:08d}.flac",
                        "path": f"/data/corpora/mount/corpus/spk{i // 200:05d}/utt{i:08d}.flac",
                        "domain": "speech",
                        "dataset": "corpus",
                        "duration": 2 + (i * 7919 % 1500) / 100,
                    }
                )
                + "\n"
            )
    make_plan(
        iter_segments(iter_items([str(manifest)], allow_outside_root=True), [], chunk=8), 3600
    )  # imports and caches, untraced
    gc.collect()
    tracemalloc.start()
    errors: list[dict] = []
    plan = make_plan(
        iter_segments(iter_items([str(manifest)], allow_outside_root=True), errors), 3600
    )
    _unpack.cache_clear()
    packed, peak = tracemalloc.get_traced_memory()
    # planning's cyclic garbage collected now, not in the middle of the next measurement (a
    # collection there freed more than the objects took: a negative size, seen in CI)
    gc.collect()
    gc.disable()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        objects = [tuple(sh.segments) for sh in plan]  # the plan as it was held before packing
        _unpack.cache_clear()
        as_objects = tracemalloc.get_traced_memory()[0] - base
    finally:
        gc.enable()
    tracemalloc.stop()
    del objects
    # a slice's start: planning the corpus itself, against reading its shards from a plan file
    from audistill.extract.planfile import PlanFile, write_plan_file

    write_plan_file(str(folder / "memory.plan"), plan, [], {})
    t0 = time.perf_counter()
    make_plan(iter_segments(iter_items([str(manifest)], allow_outside_root=True), []), 3600)[
        3::SLICES
    ]
    from_manifest = time.perf_counter() - t0
    t0 = time.perf_counter()
    mine = PlanFile(str(folder / "memory.plan"))[3::SLICES]
    from_file = time.perf_counter() - t0
    if [sh.name for sh in mine] != [sh.name for sh in plan[3::SLICES]]:
        raise RuntimeError("the plan file gave other shards")
    return {
        "segments": segments,
        "shards": len(plan),
        "packed_b": packed / segments,
        "objects_b": as_objects / segments,
        "peak_b": peak / segments,
        "slice_start_manifest_s": from_manifest,
        "slice_start_plan_file_s": from_file,
    }


def run_plan_bench(
    files: int = 20000,
    probe_workers: int = 16,
    latency_ms: float = 2.0,
    latency_files: int = 2000,
    memory_segments: int = 200000,
) -> dict:
    import audistill.extract.corpus as corpus

    with tempfile.TemporaryDirectory(prefix="audistill-bench-plan-") as tmp:
        root = Path(tmp) / "corpus"
        _write_files(root, files)
        manifest = str(Path(tmp) / "corpus.jsonl")
        t0 = time.perf_counter()
        corpus.write_manifest([str(root)], manifest, probe_workers=probe_workers)
        manifest_us = (time.perf_counter() - t0) / files * 1e6
        rows = {
            "local_one": _plan_us([str(root)], files, 1),
            "manifest": _plan_us([manifest], files, probe_workers),
        }
        real_lat, real_info = corpus.LATENCY_BOUND_S, corpus.audio_info
        try:  # every store counts as local: the threads' cost where nothing is waited for
            corpus.LATENCY_BOUND_S = float("inf")
            rows["local_auto"] = _plan_us([str(root)], files, probe_workers)
            corpus.LATENCY_BOUND_S = 0.0
            rows["local_threads"] = _plan_us([str(root)], files, probe_workers)
            corpus.LATENCY_BOUND_S = real_lat

            def slow_info(*a, **k):
                time.sleep(latency_ms / 1000)
                return real_info(*a, **k)

            corpus.audio_info = slow_info  # storage that takes latency_ms to open a file
            slow = sorted(root.glob("*/*.flac"))[
                :latency_files
            ]  # a manifest without durations: every file opened
            slow_files = len(slow)
            slow_manifest = Path(tmp) / "slow.jsonl"
            slow_manifest.write_text(
                "".join(json.dumps({"id": f"slow/{p.name}", "path": str(p)}) + "\n" for p in slow)
            )
            rows["slow_one"] = _plan_us([str(slow_manifest)], slow_files, 1)
            rows["slow_threads"] = _plan_us([str(slow_manifest)], slow_files, probe_workers)
        finally:
            corpus.LATENCY_BOUND_S, corpus.audio_info = real_lat, real_info
        mem = _memory(Path(tmp), memory_segments)
    return {
        "files": files,
        "probe_workers": probe_workers,
        "latency_ms": latency_ms,
        "slow_files": slow_files,
        "us_per_file": rows,
        "write_manifest_us_per_file": manifest_us,
        "manifest_speedup": rows["local_one"] / rows["manifest"],
        "slow_thread_speedup": rows["slow_one"] / rows["slow_threads"],
        "local_thread_cost": rows["local_threads"] / rows["local_one"],
        "bytes_per_segment": mem,
        "memory_ratio": mem["objects_b"] / mem["packed_b"],
        "slice_start_speedup": mem["slice_start_manifest_s"] / mem["slice_start_plan_file_s"],
    }


def register(app: typer.Typer) -> None:
    @app.command("bench-plan")
    def bench_plan(
        files: Annotated[int, typer.Option(help="Files in the synthetic corpus.")] = 20000,
        probe_workers: Annotated[
            int, typer.Option("--probe-workers", help="Threads reading headers.")
        ] = 16,
        latency_ms: Annotated[
            float, typer.Option("--latency-ms", help="Simulated storage latency per open.")
        ] = 2.0,
        latency_files: Annotated[
            int, typer.Option("--latency-files", help="Files read at that latency.")
        ] = 2000,
        memory_segments: Annotated[
            int, typer.Option("--memory-segments", help="Planned segments for memory.")
        ] = 200000,
        json_out: JsonOpt = False,
    ) -> None:
        """Planning's cost per file: headers read here / with threads / at storage latency, against
        a manifest with durations; the plan's memory per segment, packed against objects."""
        r = run_plan_bench(files, probe_workers, latency_ms, latency_files, memory_segments)
        us = r["us_per_file"]
        t = Table("planning from", "us per file", "vs one thread on this disk")
        for key, label in (
            ("local_one", "files, this disk, one thread"),
            ("local_auto", f"files, this disk, auto ({probe_workers} threads only if slow)"),
            ("local_threads", f"files, this disk, {probe_workers} threads forced"),
            ("manifest", "manifest with durations (no file opened)"),
        ):
            t.add_row(label, f"{us[key]:.1f}", f"{us['local_one'] / us[key]:.2f}x")
        t.add_row(
            f"files at +{latency_ms:g} ms, one thread ({r['slow_files']} files)",
            f"{us['slow_one']:.0f}",
            "",
        )
        t.add_row(
            f"files at +{latency_ms:g} ms, {probe_workers} threads",
            f"{us['slow_threads']:.0f}",
            f"{r['slow_thread_speedup']:.1f}x vs one thread at that latency",
        )
        m = r["bytes_per_segment"]
        emit(
            r,
            t,
            json_out,
            [
                f"{files} flac files; writing the manifest took "
                f"{r['write_manifest_us_per_file']:.0f} us a file, once",
                f"plan memory per segment ({m['segments']} segments of 2-17 s, {m['shards']} 1 h "
                "shards): "
                f"{m['packed_b']:.0f} B packed (as extract holds it) vs {m['objects_b']:.0f} B "
                f"as objects ({r['memory_ratio']:.1f}x); peak while planning {m['peak_b']:.0f} B",
                f"a slice's start (1 of {SLICES}, {m['segments']} segments): planning from the "
                "manifest "
                f"{m['slice_start_manifest_s']:.2f} s, reading its shards from a plan file "
                f"{m['slice_start_plan_file_s']:.3f} s "
                f"({r['slice_start_speedup']:.0f}x)",
                "at 36 million segments (100k hours of 10 s clips): "
                f"{m['packed_b'] * 36e6 / 1e9:.1f} GB packed vs {m['objects_b'] * 36e6 / 1e9:.1f} "
                "GB as objects; "
                f"reading headers {us['local_one'] * 36e6 / 1e6 / 60:.0f} min here, "
                f"{us['manifest'] * 36e6 / 1e6 / 60:.0f} min from a manifest",
            ],
        )
