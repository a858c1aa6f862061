"""Extraction on Dask distributed: one task per shard, the catalog written by the coordinator only.

The coordinator (this process) plans, loads each teacher once to check and register its identity,
fits codecs that need it, then submits every uncommitted shard as a task (retried on failure).
Workers write and commit their shard with ``update_catalog=False``; the coordinator merges the
commit records with ``bank.sync_catalog()`` at the end. ``scheduler=None`` starts a LocalCluster
with one worker per visible GPU (each task uses ``cuda:<worker name>``), or ``workers`` CPU
workers when there is no GPU.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import torch

from audistill.shards.devices import resolve_device

from .corpus import error_record
from .errors import ExtractError
from .pipeline import (
    RunOptions,
    ShardResult,
    TeacherTotals,
    open_bank_cached,
    run_shards,
    teacher_codecs,
)
from .plan import ShardPlan
from .run import (
    ExtractConfig,
    RunSummary,
    append_errors,
    start_run,
    stop_progress,
    summarize,
)
from .spec import TeacherSpec
from .teachers import Teacher, load_teacher

_CACHE: dict[tuple, list[Teacher]] = {}
_LOCK = threading.Lock()


def _worker_device(device: str) -> str:
    if device != "cuda":
        return device
    from distributed import get_worker

    name = get_worker().name
    idx = int(name) if str(name).isdigit() else 0
    return f"cuda:{idx % max(1, torch.cuda.device_count())}"


def _teachers(specs: tuple[TeacherSpec, ...], device: str) -> list[Teacher]:
    key = (tuple(repr(s) for s in specs), device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = [load_teacher(s, device) for s in specs]
        return _CACHE[key]


def shard_task(
    bank_root: str,
    storage_options: dict | None,
    shards: list[ShardPlan],
    specs: tuple[TeacherSpec, ...],
    opts: RunOptions,
    device: str,
    add: dict[str, dict[str, list[int]]] | None = None,
) -> list[ShardResult]:
    """Compute and commit a group of shards (or add teachers to committed ones) on a worker, with
    no catalog write. A group, not one shard: inside one ``run_shards`` the decode workers start
    once and each shard's write overlaps the next shard's forward. With one shard per task, every
    task started its decode workers and then left the device idle while its shard was written -
    seconds, against ~2 s of H200 time for a 1 h WavLM-Large shard. A retried task skips the
    shards its first try committed."""
    bank = open_bank_cached(bank_root, storage_options)
    add = add or {}
    todo = [sh for sh in shards if sh.name in add or not bank.is_committed(sh.name)]
    if not todo:
        return []
    teachers = _teachers(specs, _worker_device(device))
    # writer threads: the task is one of many on this worker process; no process pool per task
    opts = replace(opts, writer_kind="thread")
    # every shard in add is in todo
    return run_shards(
        bank, todo, teachers, teacher_codecs(bank, teachers), opts, update_catalog=False, add=add
    ).shards


def _done(bank, name: str, add: dict[str, list[int]] | None) -> bool:
    """Whether shard ``name`` is committed with everything asked (``add``: the layers to add)."""
    if add is None:
        return bank.is_committed(name)
    rec = bank.catalog.shards.get(name)
    return rec is not None and all(set(layers) <= rec.layers_of(t) for t, layers in add.items())


def _cluster(device: str, workers: int):
    import dask
    from distributed import LocalCluster

    # Worker processes start decode (and, on CUDA, writer) processes of their own.
    dask.config.set({"distributed.worker.daemon": False})
    n = torch.cuda.device_count() if device == "cuda" else workers
    return LocalCluster(
        n_workers=max(1, n),
        threads_per_worker=1,
        processes=device == "cuda",
        dashboard_address=None,
    )


def extract_dask(
    inputs: list[str],
    specs: list[TeacherSpec],
    bank_root: str,
    cfg: ExtractConfig,
    scheduler: str | None = None,
    workers: int = 2,
    retries: int = 2,
    shards_per_task: int = 8,
    progress_factory=None,
) -> RunSummary:
    """Run the whole plan on a Dask cluster (``scheduler`` address, or a LocalCluster), in tasks of
    ``shards_per_task`` consecutive shards (see :func:`shard_task`). ``progress_factory`` as for
    :func:`extract` (advanced as each task finishes)."""
    from distributed import Client, as_completed

    if cfg.num_workers > 1:
        raise ExtractError(
            "a Dask run is the bank's one coordinator and runs the whole plan: "
            "slices (--num-workers, --worker-index) are for separate processes"
        )
    t0 = time.perf_counter()
    run = start_run(inputs, specs, bank_root, cfg)
    bank, todo, add, plan_errors = run.bank, run.todo, run.add, run.plan_errors
    device = resolve_device(cfg.device).split(":")[0]
    run_specs = tuple(t.spec for t in run.teachers)
    summary = RunSummary(
        bank.root,
        shards_planned=len(run.mine),
        shards_skipped=run.skipped,
        segments_planned=run.segments_planned,
        teachers={s.name: TeacherTotals() for s in specs},
    )
    del run  # the coordinator's teachers: workers load their own
    cluster = None if scheduler else _cluster(device, workers)
    results, errors = [], list(plan_errors)
    groups = [
        todo[i : i + max(1, shards_per_task)] for i in range(0, len(todo), max(1, shards_per_task))
    ]
    with Client(scheduler or cluster) as client:
        futures = [
            client.submit(
                shard_task,
                bank.root,
                cfg.storage_options,
                g,
                run_specs,
                cfg.run_options(),
                device,
                {sh.name: add[sh.name] for sh in g if sh.name in add},
                key=f"extract-{g[0].name}-{len(g)}",
                retries=retries,
                pure=False,
            )
            for g in groups
        ]
        group_of = {fut.key: g for g, fut in zip(groups, futures, strict=True)}
        progress = (
            None
            if progress_factory is None
            else progress_factory(sum(sh.count for sh in todo), sum(sh.seconds for sh in todo))
        )
        try:
            for fut in as_completed(futures):
                g = group_of[fut.key]
                try:
                    done = fut.result()
                    results += done
                # noqa: BLE001 - a group that failed every retry is recorded, the rest go on
                except Exception as e:
                    # what the tries did commit stays committed, and is not an error
                    bank.sync_catalog()
                    errors += [
                        error_record(s.id, s.path, f"shard {sh.name} failed: {e}")
                        for sh in g
                        if not _done(bank, sh.name, add.get(sh.name))
                        for s in sh.segments
                    ]
                    done = []
                if progress is not None:
                    progress(sum(sh.count for sh in g), sum(r.seconds for r in done))
        finally:
            stop_progress(progress)
    if cluster is not None:
        cluster.close()
    bank.sync_catalog()
    errors += [e for r in results for e in r.errors]
    append_errors(bank, errors)
    return summarize(summary, results, errors, t0)
