"""One extraction run: plan, check, register, fit codecs, run shards, record errors, summarize.

``extract(...)`` is what ``audistill extract`` calls. Nothing is written to the bank until the
specs are valid, every teacher loads, and every teacher identity agrees with the bank's catalog.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import numpy as np

from audistill.shards import lease
from audistill.shards.bank import CATALOG, Bank
from audistill.shards.codecs import Codec, codec_from_record
from audistill.shards.devices import device_problem, resolve_device
from audistill.shards.errors import CatalogError
from audistill.shards.layouts import LayoutName, layout_names
from audistill.shards.segments import SAMPLE_RATE

from .corpus import iter_items, iter_segments
from .errors import ExtractError, TooManyFailures
from .pipeline import Progress, RunOptions, TeacherTotals, WriterKind, run_shards, teacher_codecs
from .plan import (
    ShardPlan,
    exclude_committed,
    idle_teachers,
    make_plan,
    plan_domains,
    plan_summary,
    slice_plan,
)
from .planfile import PlanFile
from .spec import TeacherSpec
from .teachers import Teacher, load_teacher, window_samples

log = logging.getLogger(__name__)
SLICE_POLL_S = 5.0
ERRORS_FILE = "errors.jsonl"
ERRORS_DIR = "errors.d"  # one file per slice run (--num-workers > 1), merged into ERRORS_FILE


Layout = LayoutName
DEFAULT_LAYOUT: Layout = "zarr"


@dataclass(frozen=True)
class ExtractConfig(RunOptions):
    """One extraction run's configuration: how shards are computed (the :class:`RunOptions`
    fields it inherits) plus how the corpus is planned and sliced and which bank it goes to.
    Validated when built, every problem reported at once."""

    # the layout of a new bank; None: an existing bank's own (zarr for a new one). An explicit
    # layout that differs from an existing bank's is refused
    layout: Layout | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_seconds: float = 30.0
    shard_seconds: float = 3600.0
    shard_segments: int = 10000
    max_failed: float = 0.01
    domain: str = "unknown"
    domain_map: dict = field(default_factory=dict)
    dataset: str = ""
    fit_seconds: float = 300.0
    num_workers: int = 1
    worker_index: int = 0
    trust_remote_code: bool = False
    plan_file: str | None = None  # a plan written by `audistill plan`, instead of corpus inputs
    slice_wait_s: float = 3600.0  # slices > 0 wait this long for slice 0 to register and fit codecs
    allow_outside_root: bool = False  # manifests may name local files outside their own folder

    def __post_init__(self) -> None:
        errs = []
        if self.layout is not None and self.layout not in layout_names():
            errs.append(f"layout {self.layout!r} is not zarr or webdataset")
        for k in ("max_seconds", "shard_seconds", "batch_seconds", "fit_seconds"):
            if getattr(self, k) <= 0:
                errs.append(f"{k} must be positive")
        if not 0 <= self.min_seconds < self.max_seconds:
            errs.append("need 0 <= min_seconds < max_seconds")
        if not 0 <= self.switch_interval_ms <= 100:
            errs.append("switch_interval_ms must be in [0, 100]")
        if self.writer_kind not in get_args(WriterKind):
            errs.append(f"writer_kind {self.writer_kind!r} is not auto, process or thread")
        if self.slice_wait_s < 0:
            errs.append("slice_wait_s must be >= 0")
        if not 0 <= self.max_failed <= 1:
            errs.append("max_failed is a fraction in [0, 1]")
        if self.num_workers < 1 or not 0 <= self.worker_index < self.num_workers:
            errs.append(
                f"need 0 <= worker_index < num_workers (got {self.worker_index} of "
                f"{self.num_workers})"
            )
        if (
            self.max_batch < 1
            or (self.loader_workers or 0) < 0
            or self.shard_segments < 1
            or self.writers < 0
        ):
            errs.append(
                "max_batch and shard_segments must be >= 1, writers and loader_workers >= 0"
            )
        errs.extend(filter(None, [device_problem(self.device)]))
        if errs:
            raise ExtractError("bad extraction settings: " + "; ".join(errs))

    def run_options(self) -> RunOptions:
        """The run options of this configuration, "auto" counts resolved for its device."""
        return self.resolved(resolve_device(self.device))


@dataclass
class RunSummary:
    bank: str
    shards_planned: int = 0
    shards_run: int = 0
    shards_skipped: int = 0
    segments_planned: int = 0
    segments_written: int = 0
    seconds: float = 0.0
    failed: int = 0
    wall_s: float = 0.0
    run_s: float = 0.0  # computing and writing shards (no planning, no model loading)
    stages: dict[str, float] = field(
        default_factory=dict
    )  # run_s split by stage (run_shards' timers)
    writer_kind: Literal["process", "thread", ""] = ""  # how shards were written ("" when none ran)
    padded_samples: int = (
        0  # samples the device ran (padding included) and real ones, over every batch
    )
    real_samples: int = 0
    commits: list[tuple[float, float]] = field(
        default_factory=list
    )  # (time.time(), audio s) per shard run
    teachers: dict[str, TeacherTotals] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    @property
    def failed_fraction(self) -> float:
        return self.failed / max(1, self.segments_planned)

    @property
    def padding_efficiency(self) -> float | None:
        """Real audio / audio the device ran: what length bucketing within shards left as
        padding."""
        return self.real_samples / self.padded_samples if self.padded_samples else None

    def pace_sps(self) -> float | None:
        """Audio seconds per second from the first shard committed to the last: the rate a long job
        runs at, free of start-up (models, worker processes, the first shard's batches) and of the
        last shard's write. None with fewer than three shards."""
        if len(self.commits) < 3:
            return None
        times = sorted(self.commits)
        span = times[-1][0] - times[0][0]
        return sum(sec for _, sec in times[1:]) / span if span > 0 else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["failed_fraction"] = self.failed_fraction
        d["padding_efficiency"] = self.padding_efficiency
        d["pace_sps"] = self.pace_sps()
        d["errors"] = self.errors[:100]
        del d["commits"]  # one per shard: the figures above summarize them
        return d


def segment_seconds(specs: list[TeacherSpec], cfg: ExtractConfig) -> float:
    """Segments are cut to the shortest window any teacher accepts (refused when that is no longer
    than the shortest segment kept: every piece would be dropped)."""
    short = [s.name for s in specs if s.max_seconds <= cfg.min_seconds]
    if short:
        raise ExtractError(
            f"teacher(s) {short}: max_seconds is at most the shortest segment kept "
            f"({cfg.min_seconds:g} s): every segment would be dropped"
        )
    return min([cfg.max_seconds] + [s.max_seconds for s in specs])


def plan_settings(specs: list[TeacherSpec], cfg: ExtractConfig) -> dict:
    """What the plan depends on besides the inputs (a plan file records them, and is refused by a
    run whose settings differ)."""
    return {
        "segment_seconds": segment_seconds(specs, cfg),
        "min_seconds": cfg.min_seconds,
        "shard_seconds": cfg.shard_seconds,
        "shard_segments": cfg.shard_segments,
        "domain": cfg.domain,
        "domain_map": dict(sorted(cfg.domain_map.items())),
        "dataset": cfg.dataset,
    }


def build_plan(
    inputs: list[str], specs: list[TeacherSpec], cfg: ExtractConfig
) -> tuple[Sequence[ShardPlan], list[dict]]:
    """The shard plan, streamed from the inputs: only the packed shards are held (see ShardPlan).
    With ``cfg.plan_file`` (and no inputs), the plan in that file (``audistill plan``), whose
    shards are read when used: a slice reads only its own."""
    if cfg.plan_file:
        if inputs:
            raise ExtractError("give corpus inputs or a plan file, not both")
        pf = PlanFile(cfg.plan_file, cfg.storage_options)
        pf.check(plan_settings(specs, cfg))
        return pf, list(pf.errors)
    if not inputs:
        raise ExtractError("no corpus inputs (folders, manifests, tars) and no plan file")
    from .audio import forget_tars

    errors: list[dict] = []
    items = iter_items(
        inputs, cfg.domain, cfg.domain_map, cfg.dataset, cfg.storage_options, cfg.allow_outside_root
    )
    segs = iter_segments(
        items, errors, segment_seconds(specs, cfg), cfg.min_seconds, cfg.storage_options
    )
    plan = make_plan(segs, cfg.shard_seconds, cfg.shard_segments)
    forget_tars()
    return plan, errors


def plan_to_file(inputs: list[str], specs: list[TeacherSpec], cfg: ExtractConfig, out: str) -> dict:
    """Plan the corpus and write the plan file ``out`` (what ``audistill plan`` does); returns the
    plan's summary."""
    from .planfile import write_plan_file

    plan, errors = build_plan(inputs, specs, cfg)
    write_plan_file(
        out,
        plan,
        errors,
        {**plan_settings(specs, cfg), "inputs": list(inputs)},
        cfg.storage_options,
    )
    summary = plan_summary(plan)
    summary["unusable_inputs"] = len(errors)
    summary["plan_file"] = out
    return summary


def load_teachers(specs: list[TeacherSpec], cfg: ExtractConfig) -> list[Teacher]:
    device = resolve_device(cfg.device)
    out = []
    for s in specs:
        if cfg.trust_remote_code and not s.trust_remote_code:
            s = TeacherSpec(**{**s.__dict__, "trust_remote_code": True})
        out.append(load_teacher(s, device))
    return out


def check_teachers(bank: Bank, records: list) -> None:
    """CatalogError (nothing written) when a teacher's identity differs from the bank's: another
    revision, weights or codec under the same name."""
    trial = copy.deepcopy(bank.catalog)
    for r in records:
        trial.add_teacher(r)


def check_and_register(bank: Bank, teachers: list[Teacher], config: dict) -> None:
    """Refuse (before writing anything) a teacher whose identity differs from the bank's."""
    records = [t.record() for t in teachers]
    check_teachers(bank, records)
    for r in records:
        bank.register_teacher(r, save=False)
    bank.catalog.config.setdefault("extract", {}).update(config)
    bank.save_catalog()


def plan_work(
    bank: Bank, shards: list[ShardPlan], teachers: list[Teacher], synced: bool = False
) -> tuple[list[ShardPlan], dict[str, dict[str, list[int]]], int]:
    """What to run: new shards, committed shards lacking some teachers' layers (with those
    layers, restricted to the segments the shard holds), and how many need nothing.

    ``synced``: the catalog was just merged with ``commits/`` (``sync_catalog``), so it is the
    record of what is committed - no second pass over every commit record (at 100 000 shards on
    object storage, as many GETs)."""
    if synced:
        records = bank.catalog.shards
    else:
        records = bank.commit_records() if any(bank.is_committed(sh.name) for sh in shards) else {}
    todo, add, skipped = [], {}, 0
    for sh in shards:
        rec = records.get(sh.name) or bank.catalog.shards.get(sh.name)
        if rec is None:
            todo.append(sh)
            continue
        need = {t.name: [x for x in t.layers if x not in rec.layers_of(t.name)] for t in teachers}
        need = {k: v for k, v in need.items() if v}
        if not need:
            skipped += 1
            continue
        if rec.num_segments == sh.count:
            # every planned segment was written, and writers write in plan order (the name's digest
            # is over the planned ids): no need to open the shard - at 100 000 shards on an object
            # store that was hours of reads before an add-teacher run started
            todo.append(sh)
            add[sh.name] = need
            continue
        ids = [s.id for s in bank.shard_reader(sh.name, record=rec, check="none").segments]
        by_id = {r.id: r for r in sh.segments}
        lost = [i for i in ids if i not in by_id]
        if lost:
            raise ExtractError(
                f"shard {sh.name} holds segments the corpus no longer has ({lost[:3]}...); "
                "cannot add teachers to it from this corpus"
            )
        todo.append(ShardPlan.of(sh.name, (by_id[i] for i in ids)))
        add[sh.name] = need
    return todo, add, skipped


def append_errors(bank: Bank, records: list[dict], part: str | None = None) -> None:
    """Append error records to ``errors.jsonl`` (skipping ones already there).

    ``part``: write them instead to ``errors.d/PART.jsonl``, a file of their own - what parallel
    slices do, since appending to one file is a read-modify-write that would lose records when
    two slices finish together. :func:`merge_errors` (run by ``audistill shards sync`` and by
    every single-process extraction as it starts) folds the parts into ``errors.jsonl``."""
    if not records:
        return
    if part is not None:
        bank.fs.write_bytes_atomic(
            f"{ERRORS_DIR}/{part}.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode()
        )
        return
    old = bank.fs.read_bytes(ERRORS_FILE).decode() if bank.fs.exists(ERRORS_FILE) else ""
    seen = set()
    for line in old.splitlines():
        if line.strip():
            d = json.loads(line)
            seen.add((d.get("segment"), d.get("file"), d.get("reason")))
    new = [r for r in records if (r["segment"], r["file"], r["reason"]) not in seen]
    if new:
        text = old + "".join(json.dumps(r) + "\n" for r in new)
        bank.fs.write_bytes_atomic(ERRORS_FILE, text.encode())


def merge_errors(bank: Bank) -> int:
    """Fold the error files of parallel slices (``errors.d/``) into ``errors.jsonl`` and remove
    them; returns how many parts were merged. Run it when no slice is running."""
    parts = [p for p in bank.fs.walk_files(ERRORS_DIR) if p.endswith(".jsonl")]
    records = [
        json.loads(line)
        for p in parts
        for line in bank.fs.read_bytes(p).decode().splitlines()
        if line.strip()
    ]
    append_errors(bank, records)  # one rewrite of errors.jsonl for all parts, before any part goes
    for p in parts:
        bank.fs.remove(p)
    return len(parts)


def fit_codecs(
    bank: Bank,
    teachers: list[Teacher],
    codecs: dict[str, Codec],
    first: ShardPlan,
    cfg: ExtractConfig,
    max_rows: int = 100_000,
) -> None:
    """Fit the ``codecs`` that need it on the first shard's first ``fit_seconds``
    (deterministic)."""
    from .audio import load_segment
    from .errors import AudioError

    need = [t for t in teachers if codecs[t.name].needs_fit and _unfitted(bank, t)]
    if not need:
        return
    waves, total = [], 0.0  # (domain, wave)
    window = window_samples(teachers)
    for ref in first.segments:
        if total >= cfg.fit_seconds:
            break
        try:
            waves.append(
                (
                    ref.domain,
                    load_segment(
                        ref.path,
                        ref.member,
                        ref.start,
                        ref.end,
                        int(cfg.min_seconds * SAMPLE_RATE),
                        cfg.storage_options,
                        window,
                    ),
                )
            )
            total += len(waves[-1][1]) / SAMPLE_RATE
        except AudioError:
            continue
    if not waves:
        raise ExtractError(f"cannot fit codecs: no readable audio in shard {first.name}")
    for t in need:
        # one run fits a teacher's codec: a second run on the bank waits, then uses the states the
        # first saved (two fits would write different states over one another)
        with lease.Claim(bank.fs, "codecs", t.name):
            bank.reload()
            if _unfitted(bank, t):
                _fit_teacher(bank, t, codecs[t.name], waves, total, first, max_rows)


def _unfitted(bank: Bank, t: Teacher) -> list[int]:
    """The layers of ``t`` with no fitted codec state in the bank's catalog."""
    return [layer for layer in t.layers if bank.load_codec_state(t.name, layer) is None]


def _fit_teacher(
    bank: Bank,
    t: Teacher,
    codec: Codec,
    waves: list[tuple[str, np.ndarray]],
    total: float,
    first: ShardPlan,
    max_rows: int,
) -> None:
    """Fit ``t``'s codec on ``waves`` (its domains' when there are any) and save each layer's
    state."""
    from .batching import pad_batch

    doms = set(t.spec.domains)
    mine = [w for d, w in waves if not doms or d in doms] or [
        w for _, w in waves
    ]  # its domains if present
    layers = _unfitted(bank, t)
    rows: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for w in mine:
        wave, lengths = pad_batch([w])
        feats, flen = t.extract(wave, lengths)
        xs = {layer: x[0, : int(flen[0])].float().cpu().numpy() for layer, x in feats.items()}
        if all(
            np.isfinite(x).all() for x in xs.values()
        ):  # NaN/Inf outputs are recorded later, never fitted
            for layer in layers:
                rows[layer].append(xs[layer])
    if not any(len(x) for xs in rows.values() for x in xs):
        raise ExtractError(
            f"cannot fit the {t.spec.codec} codec of teacher {t.name!r}: no finite features "
            f"in the first {total:.0f} s of shard {first.name}"
        )
    rng = np.random.default_rng(0)
    for layer, xs in rows.items():
        sample = np.concatenate(xs)
        if len(sample) > max_rows:
            sample = sample[np.sort(rng.choice(len(sample), max_rows, replace=False))]
        bank.save_codec_state(t.name, layer, codec.fit(sample))


def open_run(
    inputs: list[str],
    specs: list[TeacherSpec],
    bank_root: str,
    cfg: ExtractConfig,
    teachers: list[Teacher] | None = None,
):
    """Plan the corpus, load the teachers (unless given, loaded from ``specs``), open the bank and
    register them (a different revision of a teacher already in the bank is refused here, before
    anything is written)."""
    plan, plan_errors = build_plan(inputs, specs, cfg)
    if teachers is None:
        teachers = load_teachers(specs, cfg)
    elif [t.spec for t in teachers] != list(specs):
        raise ExtractError("the teachers given do not match the specs given")
    try:
        if cfg.num_workers > 1 and cfg.worker_index > 0:
            bank = wait_for_slice_zero(bank_root, teachers, cfg)
        else:
            bank = open_bank(bank_root, cfg.layout, cfg.storage_options)
            check_and_register(bank, teachers, {"teachers": [s.to_json() for s in specs]})
    except CatalogError as e:
        raise ExtractError(str(e)) from e
    return exclude_committed(bank, plan), plan_errors, teachers, bank


def open_bank(root: str, layout: Layout | None, storage_options: dict | None = None) -> Bank:
    """The bank at ``root``, created empty (``layout``, zarr when None) where there is none. An
    existing bank keeps its layout: ``layout`` None accepts it, another layout is refused."""
    bank = Bank(root, storage_options)
    if layout is None and bank.fs.exists(CATALOG):
        bank.reload()
        return bank
    return Bank.create(root, layout or DEFAULT_LAYOUT, storage_options)


def wait_for_slice_zero(bank_root: str, teachers: list[Teacher], cfg: ExtractConfig) -> Bank:
    """Slices other than 0 never write ``bank.json``: they wait until slice 0 has registered the
    teachers and fitted their codecs, then check their own teachers against it.

    When every slice registered and fitted on its own, a slice's registration could overwrite
    ``bank.json`` after slice 0 saved fitted codec states into it, losing them; and two slices
    fitting at once could each write a state (bit-different on different GPUs) and encode shards
    with the one that lost. Slice 0 is the single writer; it fits even when it has no shard left."""
    records = [t.record() for t in teachers]
    fitted = {r.name: r.layers for r in records if codec_from_record(r.codec).needs_fit}
    deadline = time.monotonic() + cfg.slice_wait_s
    while True:
        bank = Bank(bank_root, cfg.storage_options)
        missing = "the bank"
        if bank.fs.exists("bank.json"):
            bank.reload()
            if cfg.layout is not None and bank.catalog.layout != cfg.layout:
                raise ExtractError(
                    f"bank {bank_root} has layout {bank.catalog.layout!r}, not {cfg.layout!r}"
                )
            check_teachers(
                bank, records
            )  # another revision / weights / codec than slice 0's: refused now
            absent = [r.name for r in records if r.name not in bank.catalog.teachers]
            unfitted = [
                f"{name} layer {layer}"
                for name, layers in fitted.items()
                if name not in absent
                for layer in layers
                if str(layer) not in bank.catalog.teachers[name].codec_state
            ]
            missing = (f"teachers {absent}" if absent else "") or (
                f"fitted codecs of {unfitted}" if unfitted else ""
            )
            if not missing:
                return bank
        if time.monotonic() >= deadline:
            raise ExtractError(
                f"slice {cfg.worker_index} of {cfg.num_workers}: after {cfg.slice_wait_s / 60:.0f} "
                "min "
                f"{missing} still missing from {bank_root}; slice 0 registers the teachers and "
                "fits "
                "their codecs for every slice - run it (first, or alongside)"
            )
        log.info("slice %d waits for slice 0 (%s missing)", cfg.worker_index, missing)
        time.sleep(min(SLICE_POLL_S, max(0.05, deadline - time.monotonic())))


@dataclass
class RunStart:
    """A run ready to compute: its plan, teachers (registered, codecs fitted) and what to do."""

    bank: Bank
    teachers: list[Teacher]
    codecs: dict[str, Codec]  # each teacher's, built once from the catalog
    plan: Sequence[ShardPlan]  # the whole plan
    mine: list[ShardPlan]  # this slice's shards
    plan_errors: list[dict]  # inputs unusable at planning time (slice 0 records them)
    todo: list[ShardPlan]
    add: dict[str, dict[str, list[int]]]  # committed shards: {teacher: layers} to add to them
    skipped: int  # shards of this slice that need nothing

    @property
    def segments_planned(self) -> int:
        return sum(s.count for s in self.mine) + len(self.plan_errors)


def start_run(
    inputs: list[str],
    specs: list[TeacherSpec],
    bank_root: str,
    cfg: ExtractConfig,
    teachers: list[Teacher] | None = None,
) -> RunStart:
    """Everything before the shards run, the same for one process, a slice and a Dask coordinator:
    plan, load and register the teachers (:func:`open_run`); when this process is the bank's only
    writer (no slices), merge commit records and slices' error files into the catalog and clear
    new shards' leftovers; decide this slice's work; fit the codecs that need it (slice 0 fits for
    every slice, shards left or not)."""
    plan, plan_errors, teachers, bank = open_run(inputs, specs, bank_root, cfg, teachers)
    single = cfg.num_workers == 1
    if single:
        bank.sync_catalog()
        merge_errors(bank)
        bank.remove_temporaries(deep=False)  # new shards' leftovers; `shards clean` finds the rest
    mine = slice_plan(plan, cfg.num_workers, cfg.worker_index)
    todo, add, skipped = plan_work(bank, mine, teachers, synced=single)
    for warning in idle_teachers(
        specs, plan_domains(todo) if any(s.domains for s in specs) else ()
    ):
        log.warning(warning)
    codecs = teacher_codecs(bank, teachers)
    if len(plan) and (todo or (cfg.num_workers > 1 and cfg.worker_index == 0)):
        fit_codecs(bank, teachers, codecs, plan[0], cfg)
    # inputs unusable at planning time are seen by every slice; the first records them
    return RunStart(
        bank,
        teachers,
        codecs,
        plan,
        mine,
        plan_errors if cfg.worker_index == 0 else [],
        todo,
        add,
        skipped,
    )


def extract(
    inputs: list[str],
    specs: list[TeacherSpec],
    bank_root: str,
    cfg: ExtractConfig,
    progress_factory=None,
    teachers: list[Teacher] | None = None,
) -> RunSummary:
    """Run every teacher over the corpus into the bank (this process's slice of the plan).

    ``progress_factory(total_segments, total_seconds) -> Progress`` lets the CLI draw a bar.
    ``teachers``: already loaded teachers for ``specs`` (same order), e.g. to reuse one model.
    """
    t0 = time.perf_counter()
    run = start_run(inputs, specs, bank_root, cfg, teachers)
    single = cfg.num_workers == 1
    summary = RunSummary(
        run.bank.root,
        shards_planned=len(run.mine),
        shards_skipped=run.skipped,
        segments_planned=run.segments_planned,
        teachers={t.name: TeacherTotals() for t in run.teachers},
    )
    progress: Progress | None = None
    if progress_factory is not None:
        progress = progress_factory(
            sum(s.count for s in run.todo), sum(s.seconds for s in run.todo)
        )
    t_run = time.perf_counter()
    try:
        result = run_shards(
            run.bank,
            run.todo,
            run.teachers,
            run.codecs,
            cfg.run_options(),
            update_catalog=single,
            progress=progress,
            add=run.add,
        )
    finally:
        stop_progress(progress)
    summary.run_s = time.perf_counter() - t_run
    summary.stages, summary.writer_kind = result.stages, result.writer_kind
    errors = run.plan_errors + [e for r in result.shards for e in r.errors]
    append_errors(
        run.bank,
        errors,
        None
        if single
        else f"slice-{cfg.worker_index:05d}-of-{cfg.num_workers:05d}-{uuid.uuid4().hex[:8]}",
    )
    summarize(summary, result.shards, errors, t0)
    return summary


def stop_progress(progress: Progress | None) -> None:
    """End a progress display that has a ``stop`` (the CLI's bar), however the run ended."""
    stop = getattr(progress, "stop", None)
    if stop is not None:
        stop()


def summarize(summary: RunSummary, results, errors: list[dict], t0: float) -> RunSummary:
    summary.shards_run = len(results)
    summary.segments_written = sum(r.segments for r in results)
    summary.seconds = sum(r.seconds for r in results)
    summary.errors = errors
    summary.failed = len({e["segment"] for e in errors})
    summary.padded_samples = sum(r.padded_samples for r in results)
    summary.real_samples = sum(r.real_samples for r in results)
    summary.commits = [(r.committed_at, r.seconds) for r in results if r.committed_at]
    for r in results:
        for name, tot in r.teachers.items():
            summary.teachers.setdefault(name, TeacherTotals()).merge(tot)
    summary.wall_s = time.perf_counter() - t0
    return summary


def check_failures(summary: RunSummary, max_failed: float) -> None:
    if summary.failed_fraction > max_failed:
        raise TooManyFailures(
            f"{summary.failed} of {summary.segments_planned} segments failed "
            f"({summary.failed_fraction:.1%} > --max-failed {max_failed:.1%}); see errors.jsonl"
        )


def dry_run(inputs: list[str], specs: list[TeacherSpec], cfg: ExtractConfig) -> dict:
    """The plan and estimated bytes per teacher/layer, without loading any model weights."""
    from .estimate import estimate_bytes

    plan, errors = build_plan(inputs, specs, cfg)
    summary = plan_summary(slice_plan(plan, cfg.num_workers, cfg.worker_index))
    per_domain = {d: h * 3600 for d, h in summary["hours_per_domain"].items()}
    summary["unusable_inputs"] = len(errors)
    summary["segment_seconds"] = segment_seconds(specs, cfg)
    summary["teachers"] = {s.name: estimate_bytes(s, per_domain) for s in specs}
    summary["warnings"] = idle_teachers(specs, per_domain)
    return summary
