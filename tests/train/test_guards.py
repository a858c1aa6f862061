"""What a run refuses or survives: out-of-range settings (train check and train run alike, all
named at once), a diverging loss (stopped, nothing bad checkpointed), a corrupt latest checkpoint
(the one before it is used, or one line when none is usable)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from audistill.train.config import from_dict
from audistill.train.errors import ConfigError, TrainingDiverged
from audistill.train.loop import train

from .conftest import tiny_config


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The console script's entry point (its one-line errors and exit codes), in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", "from audistill.tools.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


BAD = {
    "optim.clip": -1.0,
    "optim.lr": float("inf"),
    "optim.betas": [0.9, 2.0],
    "student.dropout": 5.0,
    "run.device": "tpu",
    "data.prefetch": 0,
    "data.num_workers": 2,
}


def test_out_of_range_settings_are_all_refused_at_once(tiny_bank, tmp_path):
    with pytest.raises(ConfigError) as e:
        from_dict(tiny_config(tiny_bank, str(tmp_path), **BAD))
    msg = str(e.value)
    assert msg.startswith("6 config error(s)")
    for key in (
        "optim.clip",
        "optim.lr",
        "optim.betas",
        "student.dropout",
        "run.device",
        "data.prefetch",
    ):
        assert key in msg, key


@pytest.mark.parametrize("command", ["check", "run"])
def test_train_check_and_run_refuse_them_in_one_line(tiny_bank, tmp_path, command):
    raw = tiny_config(tiny_bank, str(tmp_path / "runs"))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    sets = [
        "--set",
        "optim.clip=-1",
        "--set",
        "optim.lr=inf",
        "--set",
        "optim.betas=[0.9, 2.0]",
        "--set",
        "student.dropout=5",
        "--set",
        'run.device="tpu"',
    ]
    r = _cli("train", command, str(path), *sets)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "5 config error(s)" in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_diverging_run_stops_and_keeps_only_finite_checkpoints(tiny_bank, tmp_path):
    cfg = from_dict(
        tiny_config(
            tiny_bank,
            str(tmp_path),
            **{
                "optim.lr": 1e30,
                "optim.warmup_steps": 0,
                "optim.max_steps": 8,
                "log.ckpt_every": 1,
                "log.every": 4,
            },
        )
    )
    with pytest.raises(TrainingDiverged, match="training diverged"):
        train(cfg)
    for ckpt in (cfg.run_dir / "checkpoints").glob("ckpt-*"):
        for name, t in load_file(str(ckpt / "model.safetensors")).items():
            assert torch.isfinite(t).all(), (ckpt.name, name)


def _flip(path, at: int = -100) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x55
    path.write_bytes(bytes(raw))


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tiny_bank, tmp_path, caplog):
    over = {"optim.max_steps": 4, "log.ckpt_every": 2}
    full = train(from_dict(tiny_config(tiny_bank, str(tmp_path / "a"), **over)))["losses"]
    cfg = from_dict(tiny_config(tiny_bank, str(tmp_path / "b"), **{**over, "optim.max_steps": 6}))
    train(cfg, stop_after=4)
    latest = cfg.run_dir / "checkpoints" / "ckpt-00000004" / "model.safetensors"
    _flip(latest)  # a flipped bit in the weights: safetensors alone would load it
    with caplog.at_level(logging.WARNING):
        resumed = train(cfg, stop_after=2)
    assert "ckpt-00000004" in caplog.text and "model.safetensors" in caplog.text
    assert resumed["step"] == 4  # steps 3 and 4 again, from ckpt-00000002
    assert resumed["losses"] == pytest.approx(full[2:], rel=1e-5, abs=1e-6)


def test_no_usable_checkpoint_is_one_line(tiny_bank, tmp_path):
    raw = tiny_config(
        tiny_bank, str(tmp_path / "runs"), **{"optim.max_steps": 4, "log.ckpt_every": 2}
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert _cli("train", "run", str(path), "--stop-after", "4").returncode == 0
    ckpts = sorted((tmp_path / "runs" / "t" / "checkpoints").glob("ckpt-*"))
    assert len(ckpts) == 2
    (ckpts[0] / "state.json").write_text('{"step": 2, "da')  # torn
    _flip(ckpts[1] / "optim.safetensors")
    r = _cli("train", "run", str(path))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and "no usable checkpoint" in err[-1], r.stderr
    assert "ckpt-00000002/state.json" in err[-1] and "ckpt-00000004/optim.safetensors" in err[-1]
