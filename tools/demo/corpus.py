"""A small real, labeled, multi-domain demo corpus (speech, music, sound), built offline.

``build_demo_corpus(out_dir)`` writes 16 kHz mono wav clips made from Debian packages (recorded
telephone prompts, speech synthesizers, General MIDI rendered through a sampled soundfont,
recorded drum/ambient/UI samples) plus:

* ``manifest.jsonl``: one clip per line: ``id``, ``path`` (relative), ``domain``, ``dataset``,
  ``duration``, ``labels`` (task key -> label) and ``frame_labels`` (task key -> list of
  ``[start_s, end_s, label]``; frames that no interval covers carry no label),
  plus ``source`` (where the audio came from) and ``group`` (clips of one group are variants of
  one recording or utterance: keep a group on one side of a train/test split);
* ``tasks.json``: every probe task (name, level, key, labels with counts, number of clips) and
  the ``fallbacks`` taken because something was missing on this machine.

Where a package is missing the builder falls back (numpy synthesis for music and sounds) or
skips the task (speech), and says so. Same seed, same machine -> same files.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import soundfile as sf
import typer

from audistill.tools.cli.options import SeedOpt
from audistill.tools.demo import corpus_sources as src
from audistill.tools.demo.corpus_audio import SAMPLE_RATE

# What the corpus uses; install with `apt-get install -y <these>` and `pip install mido`.
DEBIAN_PACKAGES = (
    "asterisk-core-sounds-en-wav",
    "asterisk-core-sounds-es-wav",
    "asterisk-core-sounds-fr-wav",
    "asterisk-core-sounds-it-wav",
    "asterisk-core-sounds-ru-wav",
    "espeak-ng",
    "flite",
    "fluidsynth",
    "fluid-soundfont-gm",
    "sonic-pi-samples",
    "sound-theme-freedesktop",
    "oxygen-sounds",
)
PYPI_PACKAGES = ("mido",)

DEFAULT_MINUTES = 15.0  # the base counts below come to about this much audio

# (task name, level, key in labels / frame_labels, domain)
TASKS = (
    ("word", "utterance", "word", "speech"),
    ("voice", "utterance", "voice", "speech"),
    ("language", "utterance", "language", "speech"),
    ("frame_activity", "frame", "activity", "speech"),
    ("instrument_family", "utterance", "instrument_family", "music"),
    ("pitch_class", "utterance", "pitch_class", "music"),
    ("frame_pitch_class", "frame", "pitch_class", "music"),
    ("sound_category", "utterance", "sound_category", "sound"),
    ("domain", "utterance", "domain", "all"),
)

Progress = Callable[[str, int, int], None]


def install_hint() -> str:
    return (
        f"apt-get install -y {' '.join(DEBIAN_PACKAGES)} && pip install {' '.join(PYPI_PACKAGES)}"
    )


@dataclass(frozen=True)
class CorpusInfo:
    root: Path
    manifest: Path
    tasks_file: Path
    n_clips: int
    seconds: float
    tasks: dict[str, dict]
    datasets: dict[str, int]
    fallbacks: list[str] = field(default_factory=list)
    build_seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("root", "manifest", "tasks_file"):
            d[k] = str(d[k])
        return d


@dataclass(frozen=True)
class Counts:
    """How many clips each source makes."""

    words: int
    language_per_class: int
    activity: int
    notes: int
    melodies: int
    sound_per_class: int

    @classmethod
    def for_minutes(cls, minutes: float) -> Counts:
        if not minutes > 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        s = minutes / DEFAULT_MINUTES

        def mult(x: float, m: int, floor: int) -> int:
            return max(floor, m * int(round(x / m)))

        return cls(
            words=mult(160 * s, 80, 48),  # 16 voices x 10 words, every pair once; 3+ per voice
            language_per_class=max(3, round(10 * s)),
            activity=max(4, round(32 * s)),
            notes=mult(120 * s, 24, 48),
            melodies=mult(40 * s, 8, 8),
            sound_per_class=max(5, round(16 * s)),
        )


def _collect(
    counts: Counts, seed: int, tmp: Path, progress: Progress | None
) -> tuple[list[src.Clip], list[str]]:
    steps = (
        ("speech: words", lambda r: src.make_words(counts.words, r, tmp)),
        ("speech: language", lambda r: src.make_language(counts.language_per_class, r)),
        ("speech: activity", lambda r: src.make_activity(counts.activity, r, tmp)),
        ("music", lambda r: src.make_music(counts.notes, counts.melodies, r, tmp)),
        ("sound", lambda r: src.make_sounds(counts.sound_per_class, r)),
    )
    clips, fallbacks = [], []
    for i, (name, fn) in enumerate(steps):
        if progress:
            progress(name, i, len(steps))
        made, notes = fn(np.random.default_rng([seed, i]))  # one stream per source
        clips += made
        fallbacks += notes
    return clips, fallbacks


def _record(clip: src.Clip) -> dict:
    return {
        "id": clip.key,
        "path": f"audio/{clip.domain}/{clip.key}.wav",
        "domain": clip.domain,
        "dataset": clip.dataset,
        "duration": round(len(clip.audio) / SAMPLE_RATE, 4),
        "labels": dict(sorted(clip.labels.items())),
        "frame_labels": {
            k: [[a, b, lab] for a, b, lab in v] for k, v in sorted(clip.frame_labels.items())
        },
        "source": clip.source,
        "group": clip.group or clip.key,
    }


def describe_tasks(records: list[dict]) -> dict[str, dict]:
    """The probe tasks present in manifest records, with label counts (frame tasks: clips per
    label)."""
    out = {}
    for name, level, key, domain in TASKS:
        where = "labels" if level == "utterance" else "frame_labels"
        counts: Counter[str] = Counter()
        n = 0
        for r in records:
            if key in r[where]:
                n += 1
                labs = (
                    [r[where][key]]
                    if level == "utterance"
                    else {lab for _, _, lab in r[where][key]}
                )
                counts.update(labs)
        if len(counts) >= 2:
            out[name] = {
                "name": name,
                "level": level,
                "key": key,
                "domain": domain,
                "labels": sorted(counts),
                "counts": dict(sorted(counts.items())),
                "n_clips": n,
            }
    return out


def _write(clips: list[src.Clip], stage: Path, progress: Progress | None) -> list[dict]:
    records = []
    for i, clip in enumerate(clips):
        if progress and i % 100 == 0:
            progress("write", i, len(clips))
        rec = _record(clip)
        path = stage / rec["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = np.clip(np.nan_to_num(clip.audio), -1.0, 1.0)
        sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
        records.append(rec)
    return records


def build_demo_corpus(
    out_dir: str | Path,
    *,
    minutes: float = DEFAULT_MINUTES,
    seed: int = 0,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> CorpusInfo:
    """Build the corpus into ``out_dir`` (written to a staging folder, then moved in place)."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
    counts = Counts.for_minutes(minutes)
    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with src.tempdir() as tmp:
            clips, fallbacks = _collect(counts, seed, Path(tmp), progress)
        ids = [c.key for c in clips]
        assert len(set(ids)) == len(ids), "clip ids must be unique"
        records = _write(clips, stage, progress)
        tasks = describe_tasks(records)
        with open(stage / "manifest.jsonl", "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
        meta = {
            "seed": seed,
            "minutes": minutes,
            "sample_rate": SAMPLE_RATE,
            "n_clips": len(records),
            "seconds": round(sum(r["duration"] for r in records), 2),
            "tasks": list(tasks.values()),
            "fallbacks": fallbacks,
        }
        (stage / "tasks.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return CorpusInfo(
        root=out,
        manifest=out / "manifest.jsonl",
        tasks_file=out / "tasks.json",
        n_clips=len(records),
        seconds=meta["seconds"],
        tasks=tasks,
        datasets=dict(sorted(Counter(r["dataset"] for r in records).items())),
        fallbacks=fallbacks,
        build_seconds=round(time.perf_counter() - t0, 2),
    )


def register(app: typer.Typer) -> None:
    @app.command("build-corpus")
    def build_corpus(
        out: Annotated[
            Path, typer.Argument(help="Output folder (must be empty unless --overwrite).")
        ],
        minutes: Annotated[
            float, typer.Option("--minutes", help="About how many minutes of audio.")
        ] = DEFAULT_MINUTES,
        seed: SeedOpt = 0,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing corpus.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Build a small labeled speech/music/sound corpus from Debian packages (offline)."""

        def show(stage: str, done: int, total: int) -> None:
            if not as_json:
                typer.echo(f"  {stage} ({done}/{total})", err=True)

        try:
            info = build_demo_corpus(
                out, minutes=minutes, seed=seed, progress=show, overwrite=overwrite
            )
        except (FileExistsError, ValueError) as e:
            typer.echo(f"audistill: error: {e}", err=True)
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps(info.to_dict()))
            return
        typer.echo(
            f"{info.n_clips} clips, {info.seconds / 60:.1f} min of audio in {info.root} "
            f"({info.build_seconds:.0f} s)"
        )
        for t in info.tasks.values():
            typer.echo(
                f"  {t['name']:<18} {t['level']:<9} {len(t['labels']):>3} labels {t['n_clips']:>5} "
                "clips"
            )
        for note in info.fallbacks:
            typer.echo(f"  fallback: {note}")
        if info.fallbacks:
            typer.echo(f"  for the real sources: {install_hint()}")
