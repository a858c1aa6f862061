"""`audistill shards ...` end to end through the real CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ...shards.helpers import make_bank


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "audistill.tools.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def bank_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "bank"
    make_bank(root, "zarr")
    return str(root)


def test_info_json_is_one_object_with_measured_bits(bank_root):
    r = cli("shards", "info", bank_root, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["segments"] == 8 and d["shards"] == 2
    assert set(d["hours_per_domain"]) == {"speech", "music", "sound", "unknown"}
    bits = d["teachers"]["speechy"]["layers"]["1"]["bits_per_value"]
    assert 8 < bits < 40  # float32 + blosc on noisy data: measured, not assumed


def test_info_table(bank_root):
    r = cli("shards", "info", bank_root)
    assert r.returncode == 0 and "speechy" in r.stdout and "bits/value" in r.stdout


def test_verify_exit_codes_name_the_broken_shard(tmp_path):
    make_bank(tmp_path / "b", "webdataset")
    assert cli("shards", "verify", str(tmp_path / "b")).returncode == 0
    tar = tmp_path / "b" / "shards" / "shard-00001.soundy.tar"
    tar.write_bytes(tar.read_bytes()[:-700])
    r = cli("shards", "verify", str(tmp_path / "b"), "--json", "--workers", "3")
    assert r.returncode == 1
    assert list(json.loads(r.stdout)["broken"]) == ["shard-00001"]


def test_convert_export_stats_round(tmp_path, bank_root):
    wds = str(tmp_path / "wds")
    assert cli("shards", "convert", bank_root, wds, "--to", "webdataset").returncode == 0
    out = str(tmp_path / "small")
    r = cli(
        "shards", "export", wds, out, "--teacher", "speechy", "--layers", "1,3", "--workers", "3"
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(cli("shards", "info", out, "--json").stdout)
    assert list(info["teachers"]) == ["speechy"] and info["teachers"]["speechy"]["layers_kept"] == [
        1,
        3,
    ]
    r = cli("shards", "stats", out, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["speechy"]["3"]["count"] > 0
    assert cli("shards", "verify", out).returncode == 0


def test_compare_measures_what_a_recode_lost_per_layer(tmp_path, bank_root):
    out = str(tmp_path / "i8")
    assert cli("shards", "recode", bank_root, out, "--codec", "int8-delta").returncode == 0
    r = cli("shards", "compare", bank_root, out, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert set(res) == {"speechy/L1", "speechy/L2", "speechy/L3", "soundy/L2", "soundy/L4"}
    assert all(0 < v["variance_lost"] < 1e-3 and v["frames"] > 0 for v in res.values())
    r = cli("shards", "compare", bank_root, out, "--teacher", "soundy")
    assert r.returncode == 0 and "soundy/L4" in r.stdout and "speechy" not in r.stdout
    make_bank(tmp_path / "other", "zarr", per_shard=3)
    r = cli("shards", "compare", bank_root, str(tmp_path / "other"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "different segments" in r.stderr and "shard-00000" in r.stderr


def test_user_errors_are_one_line_and_exit_2(tmp_path, bank_root):
    r = cli("shards", "info", str(tmp_path / "nothing"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not a bank" in r.stderr
    r = cli("shards", "export", bank_root, str(tmp_path / "x"), "--teacher", "ghost")
    assert r.returncode == 2 and "ghost" in r.stderr and "Traceback" not in r.stderr


def test_rebuild_makes_a_lost_catalog_again_and_refuses_over_an_existing_one(tmp_path):
    make_bank(tmp_path / "b", "webdataset", codec="int8-delta")
    root = str(tmp_path / "b")
    r = cli("shards", "rebuild", root)
    assert (
        r.returncode == 2 and "has a bank.json" in r.stderr and "Traceback" not in r.stderr
    )  # a user error
    os.remove(tmp_path / "b" / "bank.json")
    r = cli("shards", "rebuild", root)
    assert r.returncode == 0 and "rebuilt" in r.stdout and "speechy" in r.stdout, r.stderr
    assert cli("shards", "verify", root).returncode == 0


# Where the audio stack is missing or broken (torchaudio built against another torch fails at
# import), `audistill shards ...` must still open, check, describe and copy a bank.
_NO_AUDIO_STACK = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torchaudio", "transformers"):
            raise ImportError(f"{name} refused by the test")
sys.meta_path.insert(0, _Refuse())
sys.argv = ["audistill", *sys.argv[1:]]
from audistill.tools.cli import main
main()
"""


def test_shards_commands_need_no_audio_stack(tmp_path, bank_root):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", _NO_AUDIO_STACK, *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    for args in (
        ("shards", "info", bank_root, "--json"),
        ("shards", "verify", bank_root),
        (
            "shards",
            "export",
            bank_root,
            str(tmp_path / "x"),
            "--teacher",
            "speechy",
            "--layers",
            "1",
        ),
    ):
        r = run(*args)
        assert r.returncode == 0, (args, r.stderr)


@pytest.mark.parametrize(
    "args", [("shards", "verify"), ("shards", "verify", "--bogus", "x"), ("nosuch",)]
)
def test_usage_errors_are_one_line_and_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("audistill: error: ")


def test_codecs_lists_every_codec():
    from typer.testing import CliRunner

    from audistill.shards.codecs import codec_names
    from audistill.tools.cli.app import app

    r = CliRunner().invoke(app, ["shards", "codecs"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert all(f"│ {name} " in r.output for name in codec_names()) and len(codec_names()) >= 8
