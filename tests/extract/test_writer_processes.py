"""Writer processes die with the extractor, even when it is killed while they still start."""

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import make_corpus

CLI = [sys.executable, "-c", "from audistill.tools.cli import main; main()", "extract"]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        st = _stat(int(d)) if d.isdigit() else None
        if st is not None and int(st[1]) == pid:
            out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_writer_processes_exit_when_the_run_is_killed_as_they_start(tmp_path, tiny_dir):
    corpus = make_corpus(tmp_path / "corpus", n_speech=4, n_music=0)
    spec = tmp_path / "t.toml"
    spec.write_text(
        f'[[teacher]]\nname = "wavlm"\nsource = "{tiny_dir("wavlm")}"\nlayers = "sparse:2"\n'
        'codec = "float16"\n'
    )
    proc = subprocess.Popen(
        CLI
        + [
            str(corpus),
            "--bank",
            str(tmp_path / "bank"),
            "--teachers",
            str(spec),
            "--max-seconds",
            "1.5",
            "--loader-workers",
            "0",
            "--writers",
            "2",
            "--writer-kind",
            "process",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    kids: list[int] = []
    while time.time() < deadline and proc.poll() is None and len(kids) < 2:
        kids = _children(proc.pid)
        time.sleep(0.005)
    assert kids, "no writer process started"
    os.kill(
        proc.pid, signal.SIGKILL
    )  # while the writers still import (seconds): no death signal is set yet
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    left = [k for k in kids if _alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, f"orphaned writer processes {left}"
