"""End to end through the CLI: check, run, resume, export, upscale; a bank mismatch exits 2."""

import json
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from audistill.tools.cli.app import app
from audistill.train.export import load_student

from .conftest import tiny_config


def _write(tmp_path, raw) -> str:
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def test_cli_check_run_export_upscale(tiny_bank, tmp_path):
    cfg = _write(tmp_path, tiny_config(tiny_bank, str(tmp_path / "runs"), **{"optim.max_steps": 3}))
    r = CliRunner().invoke(app, ["train", "check", cfg, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert {(t["teacher"], t["student_layer"], t["teacher_layer"]) for t in doc["targets"]} == {
        ("tspeech", 1, 2),
        ("tspeech", 2, 4),
        ("tmusic", 1, 2),
        ("tmusic", 2, 4),
    }
    r = CliRunner().invoke(app, ["train", "run", cfg, "--stop-after", "2", "--set", "log.every=1"])
    assert r.exit_code == 0, r.output
    assert "step 2" in r.output
    r = CliRunner().invoke(app, ["train", "run", cfg])
    assert "step 3" in r.output, r.output
    ckpt = sorted((tmp_path / "runs" / "t" / "checkpoints").glob("ckpt-*"))[-1]
    r = CliRunner().invoke(app, ["train", "export", str(ckpt), str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, ["train", "upscale", str(tmp_path / "exp"), str(tmp_path / "up"), "--keep", "2"]
    )
    assert r.exit_code == 0, r.output
    up, src = load_student(tmp_path / "up"), load_student(tmp_path / "exp")
    assert up.num_layers == 5 and src.num_layers == 3
    assert json.loads((tmp_path / "up" / "config.json").read_text())["blocks"] == [0, 1, 0, 1]


def test_cli_missing_layer_is_one_line_and_exit_2(tiny_bank, tmp_path):
    raw = tiny_config(tiny_bank, str(tmp_path / "runs"))
    raw["teachers"] = [{"name": "tspeech", "map": [[2, 7]]}]
    cfg = _write(tmp_path, raw)
    p = subprocess.run(
        [sys.executable, "-c", "from audistill.tools.cli import main; main()", "train", "run", cfg],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "tspeech" in lines[0] and "[7]" in lines[0]
