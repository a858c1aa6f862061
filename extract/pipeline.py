"""The extraction pipeline: decode once per shard, run every teacher, encode on device, write.

Overlap: audio is decoded and padded in DataLoader worker processes ahead of the teachers. Each
batch's teachers are launched and their outputs encoded and queued for copy to host without a
device sync; the previous batch is collected (waiting for its copies only) after the next one is
launched, so the device never idles while the host splits, checks and hands on results. Each
finished shard goes to a pool of writers (compression, hashing, commit) while the next shard's
batches run on the device. Writers are processes fed through shared memory on CUDA and threads on
the CPU by default (see :func:`resolve_writer_kind`). At most ``writers`` shards wait or are being
written while another is computed, so memory is bounded by the shard size, not by the corpus.
Batch parts reach the writers through recycled host blocks (:class:`~.encode.HostBlocks`), given
back when their shard is written.

A committed shard that lacks some teachers (or layers) is run again with just those teachers, on
the segments it holds, and they are added with ``bank.add_field`` - nothing committed is
rewritten."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch

from audistill.shards.bank import Bank, CatalogSaver
from audistill.shards.catalog import ShardRecord
from audistill.shards.codecs import Codec, codec_from_record
from audistill.shards.devices import host_to_device, usable_cores
from audistill.shards.segments import SAMPLE_RATE

from .batching import Decoded, batch_work, decoded_batches, equal_length_groups
from .corpus import error_record
from .encode import BatchBlock, Encoded, HostBlocks, Rows, as_array, device_state, materialize
from .plan import ShardPlan
from .teachers import Teacher, window_samples

log = logging.getLogger(__name__)
Progress = Callable[[int, float], None]  # (segments done, audio seconds done)
PIPELINE_DEPTH = 1  # batches launched on the device ahead of the one being collected
WriterKind = Literal["auto", "process", "thread"]


@dataclass(frozen=True)
class RunOptions:
    """How shards are computed (flat parameters). :class:`~.run.ExtractConfig` extends it, so a
    run's one configuration is also its run options; ``loader_workers=None`` and ``writers=0`` are
    "auto", made concrete for a device by :meth:`resolved`."""

    batch_seconds: float = 200.0
    max_batch: int = 64
    # decode processes; None = auto: on CUDA max(2, min(8, cores / 3)), 2 on CPU. A core decodes
    # 44.1 kHz stereo ogg / mp3 / flac at ~390x / 600x / 620x realtime (16 kHz wav ~2900x), and
    # WavLM-Large takes ~1650 audio s/s on an H200: two would starve it
    loader_workers: int | None = None
    min_seconds: float = 0.1
    storage_options: dict | None = None
    # shards compressed and written at the same time; 0 = auto: min(8, cores / 2) on CUDA, 2 on CPU
    writers: int = 0
    # Write in threads or in processes (fed through shared memory); "auto": threads
    # (resolve_writer_kind says why)
    writer_kind: WriterKind = "auto"
    # The GIL switch interval during the run, in ms (0: leave Python's 5 ms). Writer and loader
    # threads wait up to one interval for the GIL whenever the main thread is busy launching
    # kernels; a shorter one cuts that convoy (on the dev box a writer thread beside a busy main
    # thread took 17 s for a shard at 5 ms, 4.3 s at 1 ms, 0.7 s alone).
    switch_interval_ms: float = 0.0

    def resolved(self, device: torch.device | str) -> RunOptions:
        """These options (only these fields, also when called on a subclass) with the "auto"
        decode and writer counts made concrete for ``device``, from the cores this process may use
        (its affinity and cgroup quota: a job given 8 cores of a 64-core node sizes for 8)."""
        cuda = torch.device(device).type == "cuda"
        cores = usable_cores()
        kw = {f.name: getattr(self, f.name) for f in fields(RunOptions)}
        if not kw["writers"]:
            kw["writers"] = min(8, max(2, cores // 2)) if cuda else 2
        if kw["loader_workers"] is None:
            kw["loader_workers"] = max(2, min(8, cores // 3)) if cuda else 2
        return RunOptions(**kw)


@dataclass
class TeacherTotals:
    segments: int = 0
    seconds: float = 0.0
    frames: int = 0
    values: int = 0
    bytes: int = 0
    forward_s: float = 0.0

    def merge(self, o: TeacherTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(o, f.name))


@dataclass
class ShardResult:
    name: str
    segments: int = 0
    seconds: float = 0.0
    errors: list[dict] = field(default_factory=list)
    teachers: dict[str, TeacherTotals] = field(default_factory=dict)
    # audio samples the device ran, padding included (the batches' B x N), and real ones: their
    # ratio is how much of the device's work was real audio (length bucketing within the shard)
    padded_samples: int = 0
    real_samples: int = 0
    committed_at: float = 0.0  # time.time() when the shard was committed (writers may be processes)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_shards` did: each shard run, where this thread's time went per stage
    (``loader`` waiting for decoded audio, ``launch`` queueing forwards and encodes - a model that
    syncs inside its forward shows up here -, ``device_wait`` waiting for the device, ``collect``
    host-side hand-over without device_wait, ``writers`` waiting for shard writers), and how shards
    were written (``process`` | ``thread``, after ``auto`` and the shared-memory check; "" when no
    shard ran)."""

    shards: list[ShardResult] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    writer_kind: Literal["process", "thread", ""] = ""


class _ShardState:
    """What has been computed for one shard so far."""

    def __init__(
        self, plan: ShardPlan, teachers: list[Teacher], add: dict[str, list[int]] | None = None
    ):
        self.plan = plan
        self.teachers = [t.name for t in teachers]
        self.add = add  # None: a new shard; else {teacher: layers} to add to the committed shard
        self.audio: dict[int, Rows | np.ndarray] = {}  # int16 audio per decoded segment
        self.feats: dict[int, dict[str, dict | None]] = {}
        self.failed: dict[int, str] = {}
        self.batches_left = 0
        self.result = ShardResult(plan.name, teachers={t.name: TeacherTotals() for t in teachers})


def _launch_group(
    t: Teacher, codec: Codec, states: dict, wave: torch.Tensor, lengths: torch.Tensor, g: list[int]
) -> list[tuple[list[int], Encoded]]:
    """Run ``t`` on batch positions ``g`` and start encoding; on out-of-memory split ``g`` in
    two."""
    idx = torch.tensor(g)
    n = int(lengths[idx].max())
    try:
        rows = (
            wave[: len(g)]
            if g == list(range(len(g)))
            else wave.index_select(0, host_to_device(idx, wave.device))
        )
        feats, flen = t.extract(rows[:, :n], lengths[idx])  # {layer: (b, T, D)}, (b,) on the host
        return [(g, Encoded(codec, feats, flen.tolist(), states))]
    except torch.OutOfMemoryError:
        if len(g) == 1:
            raise
        del_cache(t.device)
        half = len(g) // 2
        return _launch_group(t, codec, states, wave, lengths, g[:half]) + _launch_group(
            t, codec, states, wave, lengths, g[half:]
        )


def del_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _launch_teacher(
    t: Teacher,
    codec: Codec,
    states: dict,
    wave: torch.Tensor,
    lengths: torch.Tensor,
    pos: list[int],
) -> list[tuple[list[int], Encoded]]:
    groups = (
        [pos]
        if t.pad_invariant
        else [[pos[j] for j in g] for g in equal_length_groups([int(lengths[p]) for p in pos])]
    )
    return [x for g in groups for x in _launch_group(t, codec, states, wave, lengths, g)]


def _collect(
    launched: list[tuple[list[int], Encoded]],
    pos: list[int],
    mode: str = "arrays",
    timers: dict[str, float] | None = None,
    block: BatchBlock | None = None,
) -> tuple[list[dict | None], int]:
    """Parts per position in ``pos`` (None where the codec refused the output) and frames kept;
    copies (see :meth:`Encoded.result`) go to ``block``."""
    out: dict[int, dict | None] = {}
    frames = 0
    for g, enc in launched:
        for p, parts, n in zip(g, enc.result(mode, block), enc.flen, strict=True):
            out[p] = parts
            frames += n if parts is not None else 0
        if timers is not None:
            timers["device_wait"] = timers.get("device_wait", 0.0) + enc.wait_s
    return [out[p] for p in pos], frames


@dataclass
class _Launched:
    """A batch whose teachers have been launched; its results are collected one batch later."""

    batch: Decoded
    st: _ShardState
    work: list[tuple[Teacher, list[int], list]]  # (teacher, batch positions, launched groups)
    launch_s: dict[str, float]


def _launch(
    batch: Decoded,
    st: _ShardState,
    teachers: list[Teacher],
    codecs: dict[str, Codec],
    states: dict[str, dict],
    device: torch.device,
) -> _Launched:
    for i, reason in batch.failures.items():
        st.failed[i] = reason
        ref = st.plan.segments[i]
        st.result.errors.append(
            error_record(ref.id, ref.source if ref.member else ref.path, reason)
        )
    ok = batch.ok
    out = _Launched(batch, st, [], {})
    if not ok:
        return out
    wave, lengths = batch.wave.to(device, non_blocking=True), batch.lengths  # (B, N), (B,)
    st.result.padded_samples += wave.numel()
    st.result.real_samples += int(lengths.sum())
    for b, i in enumerate(ok):
        st.audio[i] = Rows(batch.pcm, b, int(lengths[b]))
        st.feats[i] = {}
    for t in teachers:
        if t.name not in st.teachers:
            continue
        pos = [b for b, i in enumerate(ok) if t.spec.runs_on(st.plan.segments[i].domain)]
        for b, i in enumerate(ok):
            if b not in pos:
                st.feats[i][t.name] = None
        if not pos:
            continue
        t0 = time.perf_counter()
        out.work.append(
            (t, pos, _launch_teacher(t, codecs[t.name], states[t.name], wave, lengths, pos))
        )
        out.launch_s[t.name] = time.perf_counter() - t0
    return out


def _finish(
    job: _Launched,
    mode: str,
    timers: dict[str, float] | None = None,
    blocks: HostBlocks | None = None,
    taken: list | None = None,
) -> None:
    """Collect a launched batch into its shard's state. The parts of every teacher and group of
    the batch that need a host copy share one block from ``blocks``; it is appended to ``taken``."""
    st, ok, lengths = job.st, job.batch.ok, job.batch.lengths
    need = sum(enc.copy_bytes(mode) for _, _, launched in job.work for _, enc in launched)
    block = BatchBlock(blocks, mode == "shared", need) if need else None
    if block is not None and block.recycled and taken is not None:
        taken.append(block.storage)
    for t, pos, launched in job.work:
        t0 = time.perf_counter()
        parts, frames = _collect(launched, pos, mode, timers, block)
        tot = st.result.teachers[t.name]
        tot.forward_s += job.launch_s[t.name] + time.perf_counter() - t0
        for b, p in zip(pos, parts, strict=True):
            i = ok[b]
            st.feats[i][t.name] = p
            if p is None:
                ref = st.plan.segments[i]
                st.result.errors.append(
                    error_record(
                        ref.id,
                        ref.path,
                        f"teacher {t.name}: NaN/Inf (or values beyond codec {t.spec.codec}'s "
                        "range) "
                        "in its output",
                    )
                )
            else:
                tot.segments += 1
                tot.seconds += int(lengths[b]) / SAMPLE_RATE
        tot.frames += frames
        tot.values += frames * t.dim * len(t.layers)


def write_shard(
    bank: Bank, st: _ShardState, teachers: list[str]
) -> tuple[ShardResult, ShardRecord]:
    """Write one computed shard (every segment that decoded, in plan order) and commit it.

    Runs in a writer thread or process, so it never touches the catalog (the caller adds the
    record).
    """
    res = st.result
    with bank.write_shard(st.plan.name, teachers=teachers, update_catalog=False) as w:
        for i, ref in enumerate(st.plan.segments):
            if i in st.audio:
                audio = as_array(st.audio[i])
                w.add(ref.segment(len(audio)), audio, materialize(st.feats[i]))
                res.segments += 1
                res.seconds += len(audio) / SAMPLE_RATE
    rec = w.record
    for t in teachers:
        res.teachers[t].bytes = rec.fields[t].bytes
    return res, rec.slim()  # the catalog keeps no file lists (and a writer process sends less)


def add_fields(bank: Bank, st: _ShardState) -> tuple[ShardResult, ShardRecord]:
    """Add teachers (or more layers of one) to a committed shard, segment by segment in its
    order."""
    res = st.result
    assert st.add is not None
    rec = None
    for name, layers in st.add.items():
        with bank.add_field(st.plan.name, name, layers=layers, update_catalog=False) as a:
            for i, ref in enumerate(st.plan.segments):
                parts = (materialize(st.feats.get(i)) or {}).get(name)
                a.add(ref.segment(), None if parts is None else {k: parts[k] for k in layers})
        rec = a.record
    res.segments = len(st.audio)
    res.seconds = sum(len(as_array(x)) for x in st.audio.values()) / SAMPLE_RATE
    for name in st.add:
        res.teachers[name].bytes = sum(f.bytes for f in rec.teacher_fields(name))
    return res, rec.slim()


def _write(bank: Bank, st: _ShardState) -> tuple[ShardResult, ShardRecord]:
    res, rec = write_shard(bank, st, st.teachers) if st.add is None else add_fields(bank, st)
    res.committed_at = time.time()
    return res, rec


_BANKS: dict[
    str, tuple[tuple, Bank]
] = {}  # per process: root -> (bank.json stamp, the opened bank)


def open_bank_cached(root: str, storage_options: dict | None = None) -> Bank:
    """The bank at ``root``, opened once per process and re-opened only when ``bank.json``
    changes (size, mtime / ETag): a writer process or Dask worker writes many shards, and parsing
    the catalog for each would cost more than the shard (~1 s at 10 000 shards, ~100 MB)."""
    from audistill.shards.bank import CATALOG
    from audistill.shards.fs import BankFS

    key = f"{root}\0{sorted((storage_options or {}).items())!r}"
    fs = BankFS(root, storage_options)
    info = fs.fs.info(fs.path(CATALOG))
    stamp = (info.get("size"), info.get("mtime") or info.get("LastModified"), info.get("ETag"))
    hit = _BANKS.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    bank = Bank.open(root, storage_options)
    _BANKS[key] = (stamp, bank)
    return bank


def write_shard_in_process(
    root: str, storage_options: dict | None, st: _ShardState
) -> tuple[ShardResult, ShardRecord]:
    return _write(open_bank_cached(root, storage_options), st)


def _die_with_parent(parent: int | None = None) -> None:
    """Writer processes exit when the extractor dies, so a killed run leaves no orphan finishing a
    shard while the re-run rewrites it (nor ~0.5 GB each, forever): Linux's PR_SET_PDEATHSIG,
    set as the writer starts. A parent killed before that (a writer's imports take seconds) sends
    no signal, so the writer also exits when its parent is no longer ``parent``; elsewhere a
    thread watches for that."""
    import ctypes
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    elif parent is not None:
        threading.Thread(
            target=_watch_parent, args=(parent,), daemon=True, name="parent-watch"
        ).start()
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _warm_writer() -> None:
    """Runs once in each writer process as the run starts: the imports (torch, zarr, numcodecs)
    take seconds, which would otherwise stall the first shards' writes - and the loop behind
    them."""
    import numcodecs  # noqa: F401
    import zarr  # noqa: F401


def _raise_fd_limit() -> None:
    """Shared-memory tensors (decoded audio from the loader, batch blocks for writer processes)
    each hold a file descriptor while their shard waits to be written: lift the soft limit on
    open files to the hard one, as DataLoader users are told to."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):  # e.g. above the kernel's nr_open: keep what we have
            pass


def resolve_writer_kind(kind: str, device: torch.device | str) -> str:
    """``auto`` -> threads, on CUDA as on the CPU: the kind that measured faster on both (on the
    GPU machine ``bench-extract --writer-kind auto,thread,process`` compares them, and
    ``tools/bench/gpu-session.sh`` runs that; figures in README's benchmark section).

    Threads share the process's GIL with the main thread that launches the forward's kernels;
    since a batch's launch no longer waits for the device, the main thread has slack, and threads
    spare the processes' start-up and the copies into shared memory. Processes (``process``)
    remain for a host whose writers' Python would starve the launching thread."""
    if kind != "auto":
        return kind
    torch.device(device)  # a bad device string fails here, as before
    return "thread"


SHM = "/dev/shm"


@dataclass(frozen=True)
class SharedNeed:
    """Shared memory (``/dev/shm``) a run holds at most, in bytes."""

    audio: int  # decoded audio from the decode workers: their prefetched batches, and each shard's
    # int16 audio until it is written
    features: int  # encoded teacher parts of the shards in flight, when writers are processes


def shared_bytes_needed(
    teachers: list[Teacher], codecs: dict[str, Codec], shard_seconds: float, opts: RunOptions
) -> SharedNeed:
    """What :class:`SharedNeed` a run of ``opts`` over shards of up to ``shard_seconds`` holds:
    ``writers`` shards being written, one being computed and (features) one shard's blocks kept
    for reuse; the decode workers' prefetch (4 batches each, float32 + int16 audio)."""
    per_second = 0.0
    for t in teachers:
        for ps in codecs[t.name].parts(t.dim):
            if ps.kind == "frame":
                per_second += (
                    t.frame_rate
                    * len(t.layers)
                    * np.dtype(ps.dtype).itemsize
                    * int(np.prod(ps.shape))
                )
    in_flight = (opts.writers + 2) * shard_seconds
    audio = 0
    if opts.loader_workers > 0:
        audio = int(
            in_flight * SAMPLE_RATE * 2
            + opts.loader_workers * 4 * opts.batch_seconds * SAMPLE_RATE * 6
        )
    return SharedNeed(audio, int(in_flight * per_second))


def shared_bytes_free(path: str = SHM) -> int | None:
    """Free bytes of the shared-memory file system (None where there is none, e.g. not Linux)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _writer_pool(opts: RunOptions, device: torch.device, need: SharedNeed | None = None):
    """The writer pool, after checking shared memory against ``need`` (an upper bound: it assumes
    the writers' queue full): a shortfall is warned about - running out mid-way is a bus error in a
    decode worker or no space for a batch block (the run stops; committed shards stay and a re-run
    resumes)."""
    kind = resolve_writer_kind(opts.writer_kind, device)
    free = shared_bytes_free() if need is not None else None
    if free is not None:
        fix = "enlarge it (docker run --shm-size ...) or use smaller shards / fewer writers"
        if kind == "process" and free < need.audio + need.features:
            msg = (
                f"writer processes may hold up to {_gib(need.audio + need.features)} of shared "
                "memory, "
                f"{SHM} has {_gib(free)} free"
            )
            log.warning("%s: %s, or --writer-kind thread", msg, fix)
        if free < need.audio:
            log.warning(
                "decode workers pass audio through shared memory, up to %s; %s has %s free: %s, or "
                "fewer --loader-workers",
                _gib(need.audio),
                SHM,
                _gib(free),
                fix,
            )
    if kind == "process":
        pool = ProcessPoolExecutor(
            max_workers=opts.writers,
            mp_context=mp.get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        for _ in range(
            opts.writers
        ):  # start every writer now (the pool starts them one per waiting task)
            pool.submit(_warm_writer)
        return pool, True
    return ThreadPoolExecutor(max_workers=opts.writers, thread_name_prefix="shard-writer"), False


def teacher_codecs(bank: Bank, teachers: list[Teacher]) -> dict[str, Codec]:
    """Each teacher's codec, built once from the bank's catalog (what its shards are written
    with)."""
    return {t.name: codec_from_record(bank.catalog.teacher(t.name).codec) for t in teachers}


def run_shards(
    bank: Bank,
    shards: list[ShardPlan],
    teachers: list[Teacher],
    codecs: dict[str, Codec],
    opts: RunOptions,
    update_catalog: bool = True,
    progress: Progress | None = None,
    add: dict[str, dict[str, list[int]]] | None = None,
) -> RunResult:
    """Compute and commit ``shards`` with ``teachers``, encoding with ``codecs`` (see
    :func:`teacher_codecs`). Shards named in ``add`` are committed already: only the
    teachers/layers ``add[shard]`` lists are computed and added to them."""
    if not shards:
        return RunResult()
    timers: dict[str, float] = {}
    clock = _StageClock(timers)
    device = teachers[0].device
    opts = opts.resolved(device)
    states = {
        t.name: {
            layer: device_state(bank.load_codec_state(t.name, layer), device) for layer in t.layers
        }
        for t in teachers
    }
    batch_samples = int(opts.batch_seconds * SAMPLE_RATE)
    min_samples = int(opts.min_seconds * SAMPLE_RATE)
    add = add or {}
    live = {}
    for si, sh in enumerate(shards):
        subset = [t for t in teachers if sh.name not in add or t.name in add[sh.name]]
        live[si] = _ShardState(sh, subset, add.get(sh.name))
    work = batch_work(shards, batch_samples, opts.max_batch)
    for si, _ in work:
        live[si].batches_left += 1
    results: list[ShardResult] = []
    pending: list[tuple[Future, list]] = []  # (write, host blocks to give back when it is done)
    taken: dict[int, list] = {}  # shard -> host blocks its batches hold

    saver = CatalogSaver(bank)

    def done(item: tuple[Future, list]) -> None:
        fut, held = item
        with clock("writers"):
            res, rec = fut.result()
        host_blocks.give(held)  # the shard is written: its blocks may be refilled
        results.append(res)
        if update_catalog:  # only this thread writes the catalog
            bank.catalog.shards[rec.name] = rec  # slim: writers return records without file lists
            saver.maybe()

    def finish(job: _Launched) -> None:
        with clock("collect"):
            _finish(
                job,
                "shared" if in_process else "rows",
                timers,
                host_blocks,
                taken.setdefault(job.batch.shard, []),
            )
        st = job.st
        st.batches_left -= 1
        if progress is not None:
            progress(len(job.batch.indices), job.batch.seconds)
        if st.batches_left == 0:
            while len(pending) >= opts.writers:  # bounded memory: at most `writers` shards queued
                done(pending.pop(0))
            live.pop(job.batch.shard)
            fut = (
                pool.submit(write_shard_in_process, bank.root, opts.storage_options, st)
                if in_process
                else pool.submit(_write, bank, st)
            )
            pending.append((fut, taken.pop(job.batch.shard, [])))

    _raise_fd_limit()
    need = shared_bytes_needed(teachers, codecs, max(sh.seconds for sh in shards), opts)
    pool, in_process = _writer_pool(
        opts, device, need
    )  # writer processes start while the loader does
    old_interval = sys.getswitchinterval()
    if opts.switch_interval_ms > 0:
        sys.setswitchinterval(opts.switch_interval_ms / 1000)
    host_blocks = HostBlocks(shared=in_process)
    batches = decoded_batches(
        shards,
        work,
        min_samples,
        opts.loader_workers,
        opts.storage_options,
        pin_memory=device.type == "cuda",
        max_samples=window_samples(teachers),
    )
    inflight: deque[_Launched] = deque()
    try:
        with pool:
            for batch in clock.iterate("loader", batches):
                # launch this batch, then collect the previous one: its copies to host and the
                # host-side work overlap this batch's forward on the device
                with clock("launch"):
                    inflight.append(
                        _launch(batch, live[batch.shard], teachers, codecs, states, device)
                    )
                while len(inflight) > PIPELINE_DEPTH:
                    finish(inflight.popleft())
            while inflight:
                finish(inflight.popleft())
            while pending:
                done(pending.pop(0))
    finally:
        sys.setswitchinterval(old_interval)
        if update_catalog and results:
            bank.save_catalog()
        # collect's figure included the device waits
        timers["collect"] = timers.get("collect", 0.0) - timers.get("device_wait", 0.0)
    return RunResult(results, timers, "process" if in_process else "thread")


class _StageClock:
    """Adds wall seconds per stage into a dict."""

    def __init__(self, timers: dict[str, float]):
        self.timers = timers

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timers[stage] = self.timers.get(stage, 0.0) + time.perf_counter() - t0

    def iterate(self, stage: str, it):
        it = iter(it)
        while True:
            with self(stage):
                try:
                    x = next(it)
                except StopIteration:
                    return
            yield x
