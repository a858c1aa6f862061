"""Damage is found and named: by verify, by readers, and after a crash mid-write."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from audistill.shards.bank import Bank
from audistill.shards.errors import ShardError
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .helpers import make_bank

LAYOUTS = ["zarr", "webdataset"]


def biggest_file(bank: Bank, shard: str, contains: str = "") -> str:
    files = bank.shard_files(shard)
    return max((p for p in files if contains in p), key=lambda p: files[p]["bytes"])


def read_all(root) -> None:
    for _ in BankReader(str(root)):
        pass


@pytest.mark.parametrize("layout", LAYOUTS)
def test_intact_bank_verifies(tmp_path, layout):
    make_bank(tmp_path / "b", layout)
    report = verify_bank(str(tmp_path / "b"))
    assert report.ok, report.broken
    assert report.shards_checked == 2 and report.files_checked > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_truncation_is_caught(tmp_path, layout):
    bank, _ = make_bank(tmp_path / "b", layout)
    victim = biggest_file(bank, "shard-00001", "speechy")
    p = tmp_path / "b" / victim
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    report = verify_bank(str(tmp_path / "b"))
    assert list(report.broken) == ["shard-00001"] and "truncated" in report.broken["shard-00001"][0]
    with pytest.raises(ShardError, match="shard-00001"):
        read_all(tmp_path / "b")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flipped_byte_is_caught_by_verify_and_reader(tmp_path, layout):
    bank, _ = make_bank(tmp_path / "b", layout)
    victim = biggest_file(bank, "shard-00000", "speechy")
    p = tmp_path / "b" / victim
    data = bytearray(p.read_bytes())
    at = len(data) // 3
    if layout == "webdataset":  # inside a member's data, not a tar header or padding
        index = json.loads((tmp_path / "b" / "shards" / "shard-00000.speechy.json").read_text())
        m = next(e for e in index["segments"] if e["members"])["members"]["L02.x.bin"]
        at = m["offset"] + m["size"] // 2
    data[at] ^= 0x40
    p.write_bytes(bytes(data))
    report = verify_bank(str(tmp_path / "b"))
    assert list(report.broken) == ["shard-00000"] and "sha256" in report.broken["shard-00000"][0]
    with pytest.raises(ShardError) as e:
        read_all(tmp_path / "b")
    assert e.value.shard == "shard-00000" and e.value.segment is not None
    reader = BankReader(str(tmp_path / "b"), on_error="skip")
    n = sum(1 for _ in reader)
    assert 0 < n < 8 and reader.errors and all(x.shard == "shard-00000" for x in reader.errors)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_and_extra_files_are_caught(tmp_path, layout):
    bank, _ = make_bank(tmp_path / "b", layout)
    victim = biggest_file(bank, "shard-00000", "audio")
    os.remove(tmp_path / "b" / victim)
    extra = (
        (tmp_path / "b" / "shards" / "shard-00001.zarr" / "stray.bin")
        if layout == "zarr"
        else (tmp_path / "b" / "shards" / "shard-00001.extra.tar")
    )
    extra.write_bytes(b"x")
    report = verify_bank(str(tmp_path / "b"))
    assert set(report.broken) == {"shard-00000", "shard-00001"}
    assert any("missing file" in p for p in report.broken["shard-00000"])
    assert any("stray" in p or "extra" in p for p in report.broken["shard-00001"])
    with pytest.raises(ShardError, match="missing"):
        BankReader(str(tmp_path / "b")).read("shard-00000", 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_catalog_shard_mismatch_is_caught(tmp_path, layout):
    make_bank(tmp_path / "b", layout)
    path = tmp_path / "b" / "bank.json"
    d = json.loads(path.read_text())
    d["shards"]["shard-00001"]["num_segments"] = 5
    path.write_text(json.dumps(d))
    report = verify_bank(str(tmp_path / "b"))
    assert list(report.broken) == ["shard-00001"]
    assert any("disagrees" in p for p in report.broken["shard-00001"])
    assert any("segments" in p for p in report.broken["shard-00001"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_exception_mid_write_commits_nothing(tmp_path, layout):
    bank, truth = make_bank(tmp_path / "b", layout, shards=1)
    seg, audio, _ = next(iter(truth.values()))
    with pytest.raises(RuntimeError):
        with bank.write_shard("doomed", []) as w:
            w.add(seg, audio, {})
            raise RuntimeError("boom")
    assert "doomed" not in Bank.open(str(tmp_path / "b")).catalog.shards
    assert not any("doomed" in p for p in os.listdir(tmp_path / "b" / "shards"))
    assert verify_bank(str(tmp_path / "b")).ok


_KILLED_WRITER = textwrap.dedent("""
    import sys, time, numpy as np, torch
    from audistill.shards.bank import Bank
    from audistill.shards.codecs import get_codec
    from audistill.shards.segments import Segment
    bank = Bank.open(sys.argv[1])
    codec = get_codec("float32")
    with bank.write_shard("victim", ["speechy"]) as w:
        for k in range(100000):
            seg = Segment(f"seg-{k}", "x", num_samples=16000)
            parts = {l: codec.encode(torch.ones(50, 12)) for l in (1, 2, 3)}
            w.add(seg, np.zeros(16000, np.int16), {"speechy": parts})
            if k == 3:
                print("writing", flush=True)
            time.sleep(0.01)
""")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sigkill_mid_write_leaves_nothing_that_looks_complete(tmp_path, layout):
    make_bank(tmp_path / "b", layout, shards=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "b")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    bank = Bank.open(str(tmp_path / "b"))
    assert not bank.is_committed("victim")
    assert [s for s in BankReader(bank).shards] == ["shard-00000"]
    # a WebDataset writer streams its tars; a Zarr writer stages metadata in memory and writes
    # data objects as blocks fill - small segments may have left nothing yet
    left = [p for p in os.listdir(tmp_path / "b" / "shards") if ".tmp-victim" in p]
    assert left or layout == "zarr"
    report = verify_bank(bank)
    assert report.ok == (not left)
    if left:
        assert any("victim" in p for p in report.broken["<bank>"])
        assert bank.remove_temporaries()
    assert verify_bank(bank).ok


def test_reader_refuses_missing_teacher_with_one_message(tmp_path):
    make_bank(tmp_path / "b", "zarr", shards=1)
    with pytest.raises(Exception) as e:
        BankReader(str(tmp_path / "b"), {"nope": None, "speechy": [1, 99]})
    msg = str(e.value)
    assert "'nope'" in msg and "[99]" in msg


def test_paths_never_leave_the_root(tmp_path):
    from audistill.shards.errors import UnsafePathError
    from audistill.shards.fs import BankFS

    fs = BankFS(str(tmp_path / "b"))
    for bad in ["../escape", "/etc/passwd", "a/../../b", "s3://other/bucket"]:
        with pytest.raises(UnsafePathError):
            fs.write_bytes_atomic(bad, b"x")
    assert not (tmp_path / "escape").exists()
    np.testing.assert_equal(fs.path("a/./b").endswith("/a/b"), True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_rewrite_removes_what_a_crashed_writer_moved_into_place(tmp_path, layout):
    """A writer killed between moving a shard's files to their final names and its commit record
    leaves final-named files; the next write of that shard replaces them and commits cleanly."""
    bank, truth = make_bank(tmp_path / "b", layout, shards=1)
    seg, audio, _ = next(iter(truth.values()))
    seg = dataclasses.replace(
        seg, id=f"{seg.id}-2"
    )  # another segment: one stored twice is a finding of its own
    leftovers = (
        ["shards/again.zarr/zarr.json", "shards/again.zarr/audio/c/0"]
        if layout == "zarr"
        else ["shards/again.audio.tar", "shards/again.audio.json", "shards/again.speechy.tar"]
    )
    for rel in leftovers:
        bank.fs.write_bytes_atomic(rel, b"half of an earlier try")
    with bank.write_shard("again", []) as w:
        w.add(seg, audio, {})
    reader = BankReader(bank, [])
    assert reader.read("again", 0).audio.tolist() == audio.tolist()
    report = verify_bank(bank)
    # the files this write makes are replaced; locally, a WebDataset field it does not make stays
    # a stray file (finding it would list the whole shards/ folder - 100 000 shards' - per write)
    stray = {p for ps in report.broken.values() for p in ps}
    assert stray == (
        {"uncommitted or stray file shards/again.speechy.tar (a crashed writer's leftover?)"}
        if layout == "webdataset"
        else set()
    ), stray


def test_clean_removes_every_kind_of_temporary_from_one_listing(tmp_path, monkeypatch):
    from audistill.shards.fs import BankFS

    bank, truth = make_bank(tmp_path / "b", "zarr", shards=2)
    temps = [
        "shards/.tmp-gone-1a2b3c4d.zarr",
        "shards/shard-00000.zarr/.tmp-late-5e6f7a8b",
        "shards/shard-00001.zarr/zarr.json.tmp-0a1b2c3d",
    ]
    for t, f in zip(temps, ["/audio/zarr.json", "/zarr.json", ""], strict=True):
        bank.fs.write_bytes_atomic(t + f, b"{}")
    assert not verify_bank(bank).ok
    listed = []
    real = BankFS.listdir
    monkeypatch.setattr(BankFS, "listdir", lambda self, rel: listed.append(rel) or real(self, rel))
    assert bank.remove_temporaries() == sorted(temps)
    # one walk of shards/, no listing per shard (the few fixed folders - commits/, leases/, locks/ -
    # are listed once)
    assert not [r for r in listed if r.startswith("shards")], listed
    assert verify_bank(bank).ok
    assert len(list(BankReader(bank))) == len(truth)


def _newer_codec_in_shard(root, shard: str, field: str, layout: str) -> None:
    """Raise the codec version in the field spec the shard itself stores (what its reader decodes
    by)."""
    path = (
        (root / "shards" / f"{shard}.zarr" / field / "zarr.json")
        if layout == "zarr"
        else (root / "shards" / f"{shard}.{field}.json")
    )
    d = json.loads(path.read_text())
    spec = d["attributes"]["audistill"] if layout == "zarr" else d["field"]
    spec["codec"]["version"] = 99
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_newer_codec_version_is_refused_naming_the_shard_once(tmp_path, layout):
    root = tmp_path / "b"
    make_bank(root, layout, shards=1, per_shard=2)
    _newer_codec_in_shard(root, "shard-00000", "speechy", layout)
    with pytest.raises(ShardError) as e:
        for _ in BankReader(str(root), ["speechy"], check="none"):
            pass
    msg = str(e.value)
    assert "version 99" in msg and "upgrade audistill" in msg and "'speechy'" in msg, msg
    assert msg.count("shard-00000") == 1 and e.value.shard == "shard-00000" and e.value.segment, msg
