"""The tree stays as `ruff format` writes it, within the line length, and lint-clean (the
configuration is pyproject.toml's; ruff is pinned there, as its format moves between releases)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module", autouse=True)
def _have_ruff():
    if _ruff("--version").returncode != 0 and shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (it is in the dev extra)")


def test_the_tree_is_formatted():
    r = _ruff("format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_tree_is_lint_clean_line_length_included():
    r = _ruff("check", ".")
    assert r.returncode == 0, r.stdout + r.stderr
