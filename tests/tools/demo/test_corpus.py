"""The demo corpus: valid manifest, safe ids, balanced labels, 16 kHz mono audio, determinism,
and the fallbacks when the Debian packages are hidden."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from audistill.shards.devices import torch_threads
from audistill.tools.demo import corpus, corpus_audio, corpus_sources
from audistill.tools.demo.corpus import build_demo_corpus

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
HAVE_REAL = (
    all(shutil.which(t) for t in ("espeak-ng", "flite", "fluidsynth"))
    and corpus_sources.SOUNDFONT.is_file()
    and corpus_sources.SONIC_PI_SAMPLES.is_dir()
    and len(corpus_sources.asterisk_speakers()) >= 2
)


def read(root: Path) -> tuple[list[dict], dict]:
    recs = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    return recs, json.loads((root / "tasks.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, corpus.CorpusInfo]:
    root = tmp_path_factory.mktemp("corpus") / "demo"
    return root, build_demo_corpus(root, minutes=0.5, seed=3)


def test_manifest_is_valid(tiny):
    root, info = tiny
    recs, _ = read(root)
    assert len(recs) == info.n_clips > 0
    ids = [r["id"] for r in recs]
    assert len(set(ids)) == len(ids)
    for r in recs:
        assert SAFE.match(r["id"]), r["id"]
        assert SAFE.match(r["group"]), r["group"]
        assert r["domain"] in ("speech", "music", "sound")
        assert r["labels"]["domain"] == r["domain"]
        assert isinstance(r["dataset"], str) and r["dataset"]
        assert (root / r["path"]).is_file() and not Path(r["path"]).is_absolute()
        assert 1.0 <= r["duration"] <= 4.0
        assert all(isinstance(v, str) for v in r["labels"].values())
        for intervals in r["frame_labels"].values():
            assert intervals, r["id"]
            for (a, b, lab), nxt in zip(intervals, intervals[1:] + [None], strict=True):
                assert 0 <= a < b <= r["duration"] + 1e-6 and isinstance(lab, str)
                assert nxt is None or nxt[0] >= b - 1e-6  # sorted, not overlapping
    assert not (root.parent / "demo.partial").exists()
    label_of_group: dict[tuple[str, str], str] = {}
    for r in recs:  # a group (variants of one recording) never spans two labels of a task
        for k, v in r["labels"].items():
            assert label_of_group.setdefault((r["group"], k), v) == v, (r["group"], k)


def test_audio_is_16k_mono_finite_and_matches_duration(tiny):
    root, _ = tiny
    recs, _ = read(root)
    for r in recs:
        x, sr = sf.read(str(root / r["path"]), always_2d=True)
        assert sr == 16000 and x.shape[1] == 1
        assert np.isfinite(x).all()
        assert abs(len(x) / sr - r["duration"]) < 1e-3
        assert np.sqrt(np.mean(x**2)) > 1e-3, f"{r['id']} is silent"


def test_tasks_match_manifest_and_are_balanced(tiny):
    root, info = tiny
    recs, meta = read(root)
    assert meta["fallbacks"] == info.fallbacks
    assert {t["name"] for t in meta["tasks"]} == set(info.tasks)
    for t in meta["tasks"]:
        where = "labels" if t["level"] == "utterance" else "frame_labels"
        have = [r for r in recs if t["key"] in r[where]]
        assert len(have) == t["n_clips"]
        assert sorted(t["counts"]) == t["labels"] and len(t["labels"]) >= 2
        if t["level"] == "utterance":
            counts = list(t["counts"].values())
            assert min(counts) >= 3  # enough for a train / val / test split
            if t["name"] != "domain":
                assert max(counts) <= math.ceil(1.25 * min(counts)), (t["name"], t["counts"])
    for name in (
        "instrument_family",
        "pitch_class",
        "frame_pitch_class",
        "sound_category",
        "domain",
    ):
        assert name in info.tasks  # the music and sound tasks exist with or without the packages


@pytest.mark.skipif(not HAVE_REAL, reason="the corpus's Debian packages are not installed")
def test_real_sources_used_when_installed(tiny):
    _, info = tiny
    assert info.fallbacks == []
    assert {"word", "voice", "language", "frame_activity"} <= set(info.tasks)
    assert {"espeak", "flite", "fluidsynth-gm", "sonic-pi"} <= set(info.datasets)
    assert any(d.startswith("asterisk-") for d in info.datasets)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deterministic_given_seed(tiny, tmp_path):
    """The same seed gives the same bytes, also when torch runs on another number of threads
    (the fixture's corpus was built with the suite's 2)."""
    root, _ = tiny
    again = tmp_path / "again"
    with torch_threads(4):
        build_demo_corpus(again, minutes=0.5, seed=3)
    assert (again / "manifest.jsonl").read_bytes() == (root / "manifest.jsonl").read_bytes()
    recs, _ = read(root)
    # digests, not bytes: pytest's diff of two differing WAV files ran for over 5 minutes
    differ = [r["id"] for r in recs if _digest(again / r["path"]) != _digest(root / r["path"])]
    assert differ == [], f"{len(differ)} of {len(recs)} clips differ: {differ[:10]}"
    other = tmp_path / "other"
    build_demo_corpus(other, minutes=0.5, seed=4)
    assert (other / "manifest.jsonl").read_bytes() != (root / "manifest.jsonl").read_bytes()


def test_refuses_to_overwrite_unless_asked(tiny):
    root, _ = tiny
    with pytest.raises(FileExistsError):
        build_demo_corpus(root, minutes=0.5, seed=3)


def hide_packages(monkeypatch, tmp_path, tools=("espeak-ng", "flite", "fluidsynth")):
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name in tools else real_which(name, *a, **k)
    )
    for attr in (
        "ASTERISK_ROOT",
        "SOUNDFONT",
        "SONIC_PI_SAMPLES",
        "FREEDESKTOP_SOUNDS",
        "OXYGEN_SOUNDS",
    ):
        monkeypatch.setattr(corpus_sources, attr, tmp_path / "missing" / attr.lower())


def test_fallbacks_when_packages_are_missing(monkeypatch, tmp_path):
    hide_packages(monkeypatch, tmp_path)
    info = build_demo_corpus(tmp_path / "fb", minutes=0.3, seed=0)
    recs, meta = read(tmp_path / "fb")
    assert meta["fallbacks"] == info.fallbacks
    text = " ".join(info.fallbacks)
    assert (
        "no speech synthesizer" in text
        and "numpy additive synthesis" in text
        and "synthetic noise" in text
    )
    assert {r["domain"] for r in recs} == {"music", "sound"}
    assert set(info.datasets) == {"numpy-synth", "numpy-noise"}
    assert not {"word", "voice", "language", "frame_activity"} & set(info.tasks)
    assert {
        "instrument_family",
        "pitch_class",
        "frame_pitch_class",
        "sound_category",
        "domain",
    } <= set(info.tasks)
    for r in recs[::10]:
        x, sr = sf.read(str(tmp_path / "fb" / r["path"]))
        assert sr == 16000 and x.ndim == 1 and np.isfinite(x).all() and np.abs(x).max() > 0.01


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_words_with_one_engine_missing_say_so(monkeypatch, tmp_path):
    hide_packages(monkeypatch, tmp_path, tools=("flite",))
    clips, notes = corpus_sources.make_words(8, np.random.default_rng(0), tmp_path)
    assert len(clips) == 8 and any("flite" in n for n in notes)
    assert {c.dataset for c in clips} == {"espeak"}
    espeak = [v for v in corpus_sources.VOICES if v[0] == "espeak-ng"]
    assert {c.labels["voice"] for c in clips} == {
        corpus_sources.voice_label(*v) for v in espeak[: len(clips)]
    }


def test_counts_scale_with_minutes():
    small, default, big = (corpus.Counts.for_minutes(m) for m in (0.5, corpus.DEFAULT_MINUTES, 60))
    assert small.words <= default.words < big.words
    assert default.notes % 24 == 0 and default.words % 40 == 0
    with pytest.raises(ValueError):
        corpus.Counts.for_minutes(0)


def test_cli_build_corpus(tmp_path):
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """test root"""

    corpus.register(app)
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        app, ["build-corpus", str(out), "--minutes", "0.2", "--seed", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["n_clips"] == len((out / "manifest.jsonl").read_text().splitlines())
    res = runner.invoke(app, ["build-corpus", str(out), "--minutes", "0.2"])
    assert res.exit_code == 2 and "overwrite" in res.output


@pytest.mark.parametrize("sr", [8000, 22050, 44100])
def test_resample_does_not_depend_on_torchs_thread_count(sr):
    """float32 resampling changed low bits with the thread count (5e-7 from 2 to 4 threads),
    enough to move a trim boundary; the corpus's resampler must give the same bits."""
    rng = np.random.default_rng(sr)
    xs = [rng.standard_normal(int(sr * s)).astype(np.float32) for s in (0.3, 0.77, 1.5)]
    out = {}
    for t in (1, 2, 4):
        with torch_threads(t):
            out[t] = [corpus_audio.resample(x, sr) for x in xs]
    for x, y in zip(xs, out[1], strict=True):
        assert y.dtype == np.float32 and abs(len(y) - len(x) * 16000 / sr) <= 1
    for t in (2, 4):
        for a, b in zip(out[1], out[t], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{sr} Hz, 1 vs {t} threads")
