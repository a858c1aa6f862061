"""Shared fixtures: tiny transformers teachers saved to disk, tiny corpora written in the test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from .tiny_models import make_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A function kind -> folder of a tiny random model of that kind (made once per session)."""
    root = tmp_path_factory.mktemp("tiny_models")
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = make_tiny(kind, root / kind)
        return made[kind]

    return get


def write_wav(
    path: Path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0, fmt=None
) -> Path:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    x = (rng.standard_normal((n, channels)) * 0.1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x if channels > 1 else x[:, 0], sr, format=fmt)
    return path


def make_corpus(root: Path, n_speech: int = 6, n_music: int = 3) -> Path:
    """speech/ and music/ folders of short random recordings (mixed rates, channels, formats)."""
    for i in range(n_speech):
        write_wav(root / "speech" / f"utt{i:02d}.wav", 0.4 + 0.37 * i, seed=i)
    for i in range(n_music):
        write_wav(
            root / "music" / f"song{i}.flac", 1.0 + 0.8 * i, sr=22050, channels=2, seed=100 + i
        )
    return root


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus")


def run_cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """``audistill ARGV...`` in this process: (exit code, stdout, stderr)."""
    import sys

    from audistill.tools.cli import main

    monkeypatch.setattr(sys, "argv", ["audistill", *argv])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err
