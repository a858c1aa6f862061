"""`audistill extract` end to end in a subprocess: exit codes, dry run, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .conftest import make_corpus, run_cli

CLI = [sys.executable, "-c", "from audistill.tools.cli import main; main()", "extract"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _spec(tmp_path, tiny_dir):
    p = tmp_path / "teachers.toml"
    p.write_text(
        f'[[teacher]]\nname = "wavlm"\nsource = "{tiny_dir("wavlm")}"\nlayers = "sparse:2"\n'
        'codec = "float16"\n'
    )
    return p


def _content(root):
    out = {}
    for sd in BankReader(root):
        out[sd.segment.id] = (
            sd.shard,
            sd.audio.tobytes(),
            {t: {k: v.tobytes() for k, v in f.items()} for t, f in sd.features.items()},
        )
    return out


def _main(args, capsys, monkeypatch):
    """The CLI in this process (exit code, stdout, stderr)."""
    return run_cli(monkeypatch, capsys, "extract", *args)


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[teacher]]\nname = "x"\nsource = "/no/such/folder"\n')
    code, _, err = _main(
        [str(tmp_path), "--teachers", str(bad), "--bank", str(tmp_path / "bank")],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bank").exists()
    bad.write_text('[[teacher]]\nname = "x"\n')
    code, _, err = _main(
        [str(tmp_path), "--teachers", str(bad), "--bank", str(tmp_path / "bank")],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "missing 'source'" in err
    good = _spec(tmp_path, lambda kind: tmp_path)
    code, _, err = _main(
        [
            str(tmp_path),
            "--teachers",
            str(good),
            "--bank",
            str(tmp_path / "bank"),
            "--writer-kind",
            "fibers",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "writer_kind 'fibers'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bank").exists()


def test_cli_dry_run_and_resume_after_sigkill(tmp_path, tiny_dir, capsys, monkeypatch):
    corpus = make_corpus(tmp_path / "corpus", n_speech=10, n_music=2)
    spec = _spec(tmp_path, tiny_dir)
    common = [
        "--teachers",
        str(spec),
        "--max-seconds",
        "1.5",
        "--shard-hours",
        str(3.0 / 3600),
        "--loader-workers",
        "0",
        "--domain-map",
        "speech=speech",
        "--domain-map",
        "music=music",
    ]
    code, out, _ = _main(
        [str(corpus), "--bank", str(tmp_path / "x"), "--dry-run", "--json"] + common,
        capsys,
        monkeypatch,
    )
    plan = json.loads(out)
    assert code == 0 and plan["shards"] >= 5 and not (tmp_path / "x").exists()

    code, out, err = _main(
        [str(corpus), "--bank", str(tmp_path / "ref"), "--json"] + common, capsys, monkeypatch
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["shards_run"] == plan["shards"] and summary["failed"] == 0

    bank = tmp_path / "killed"
    proc = subprocess.Popen(
        CLI + [str(corpus), "--bank", str(bank), "--json"] + common,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if (bank / "commits").exists() and list((bank / "commits").glob("*.json")):
            break
        time.sleep(0.01)
    time.sleep(0.1)  # somewhere inside a later shard
    if proc.poll() is not None:
        pytest.fail("the run ended before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((bank / "commits").glob("*.json")))
    assert 1 <= done_before < plan["shards"]

    again = subprocess.run(
        CLI + [str(corpus), "--bank", str(bank), "--json"] + common,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=240,
    )
    assert again.returncode == 0, again.stderr
    s2 = json.loads(again.stdout)
    assert s2["shards_skipped"] == done_before and s2["shards_run"] == plan["shards"] - done_before
    assert verify_bank(str(bank)).ok
    assert _content(str(bank)) == _content(str(tmp_path / "ref"))
    assert Bank.open(str(bank)).catalog.num_segments == summary["segments_written"]
