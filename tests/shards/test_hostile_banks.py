"""Crafted or damaged banks: nothing outside the bank is ever read through it, unsafe names
are refused, and what was read is checked against what was committed."""

from __future__ import annotations

import os

import pytest

from audistill.shards.bank import Bank
from audistill.shards.copy import copy_bank
from audistill.shards.errors import BankError
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .helpers import make_bank

LAYOUTS = ["zarr", "webdataset"]


def _largest(root, shard: str) -> str:
    files = Bank.open(str(root)).shard_files(shard)
    return max(files, key=lambda rel: files[rel]["bytes"])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_symlink_in_a_bank_is_never_followed(tmp_path, layout, what):
    make_bank(tmp_path / "b", layout, shards=1)
    rel = _largest(tmp_path / "b", "shard-00000")
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    path = tmp_path / "b" / rel
    if what == "file":  # the link has the size the commit record says, so a size check alone passes
        secret.write_bytes(
            b"SECRET" * (path.stat().st_size // 6) + b"S" * (path.stat().st_size % 6)
        )
        os.remove(path)
        os.symlink(secret, path)
    else:  # a folder of the shard moved outside and linked back
        folder = path.parent
        os.rename(folder, secret)
        os.symlink(secret, folder)
    with pytest.raises(BankError, match="symbolic link"):
        list(BankReader(str(tmp_path / "b")))
    with pytest.raises(BankError, match="symbolic link"):
        copy_bank(
            str(tmp_path / "b"),
            str(tmp_path / "out"),
            layout="webdataset" if layout == "zarr" else "zarr",
        )
    out = tmp_path / "out"
    assert not out.exists() or not any(
        b"SECRET" in p.read_bytes() for p in out.rglob("*") if p.is_file()
    )
    report = verify_bank(str(tmp_path / "b"))
    assert not report.ok and "symbolic link" in str(report.broken)


@pytest.mark.parametrize("inner", ["../../escape", "shard-00000", "a b"])
def test_sync_takes_a_shard_name_from_its_record_file_and_checks_it(tmp_path, inner):
    import json

    bank, truth = make_bank(tmp_path / "b", "zarr", shards=1)
    rec = json.loads((tmp_path / "b" / "commits" / "shard-00000.json").read_text())
    rec["name"] = inner
    (tmp_path / "b" / "commits" / "copied.json").write_text(
        json.dumps(rec)
    )  # a record under another name
    (tmp_path / "b" / "commits" / "bad name.json").write_text(
        json.dumps({**rec, "name": "bad name"})
    )
    with pytest.raises(BankError, match="copied.json") as e:
        Bank.open(str(tmp_path / "b")).sync_catalog()
    assert "bad name.json" in str(e.value)
    opened = Bank.open(str(tmp_path / "b"))
    assert sorted(opened.catalog.shards) == ["shard-00000"]  # nothing named by those records
    assert len(list(BankReader(opened))) == len(truth)  # and the bank reads as before
    report = verify_bank(str(tmp_path / "b"))
    assert {"copied", "bad name"} <= set(report.broken)


def _same_size_edit(path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new, 1))


@pytest.mark.parametrize("edit", ["fill value", "domain", "segment id", "wds index"])
def test_same_size_metadata_changes_are_refused_by_the_default_reader(tmp_path, edit):
    layout = "webdataset" if edit == "wds index" else "zarr"
    make_bank(tmp_path / "b", layout, shards=1)
    shard = tmp_path / "b" / "shards"
    if edit == "fill value":
        _same_size_edit(
            shard / "shard-00000.zarr" / "audio" / "samples" / "zarr.json",
            b'"fill_value": 0',
            b'"fill_value": 7',
        )
    elif edit == "domain":
        _same_size_edit(shard / "shard-00000.zarr" / "zarr.json", b'"music"', b'"mus1c"')
    elif edit == "segment id":
        seg = next(iter(BankReader(str(tmp_path / "b")))).segment.id
        _same_size_edit(
            shard / "shard-00000.zarr" / "zarr.json", seg.encode(), seg[:-1].encode() + b"x"
        )
    else:
        _same_size_edit(shard / "shard-00000.speechy.json", b'"frames": ', b'"frames":\t')
    with pytest.raises(BankError, match="does not match its commit record"):
        list(BankReader(str(tmp_path / "b")))
    assert not verify_bank(str(tmp_path / "b")).ok


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("frame_rate", 49.0),
        ("dim", 13),
        ("home_domain", "music"),
        ("codec", {"name": "float16", "version": 1, "config": {}}),
    ],
)
def test_an_edited_teacher_record_in_the_catalog_is_refused(tmp_path, key, value):
    import json

    make_bank(tmp_path / "b", "zarr", shards=1)
    path = tmp_path / "b" / "bank.json"
    cat = json.loads(path.read_text())
    cat["teachers"]["speechy"][key] = value
    path.write_text(json.dumps(cat))
    with pytest.raises(BankError, match=f"teacher 'speechy' is not the one.*{key}"):
        list(BankReader(str(tmp_path / "b")))
    report = verify_bank(str(tmp_path / "b"))
    assert key in str(report.broken.get("shard-00000"))


@pytest.mark.parametrize("inner", ["shards/nested", "deeper/still/x"])
def test_a_bank_is_not_made_inside_another(tmp_path, inner):
    make_bank(tmp_path / "b", "zarr", shards=1)
    with pytest.raises(BankError, match=f"inside the bank {tmp_path / 'b'}"):
        Bank.create(str(tmp_path / "b" / inner), "zarr")
    assert not (tmp_path / "b" / inner).exists()
    assert verify_bank(str(tmp_path / "b")).ok


def test_torn_atomic_writes_are_reported_and_cleaned(tmp_path):
    bank, _ = make_bank(tmp_path / "b", "zarr", shards=1)
    torn = [
        "bank.json.tmp-1a2b3c4d",
        "commits/shard-00000.json.tmp-run0123456789abcdef-1a2b3c4d",
        "codec_state/x/L01.npz.tmp-5e6f7a8b",
    ]
    for rel in torn:
        (tmp_path / "b" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "b" / rel).write_bytes(b"{")
    report = verify_bank(str(tmp_path / "b"))
    assert all(rel in str(report.broken["<bank>"]) for rel in torn), report.broken
    # the one of a run holding no lease is younger than the lease TTL: kept until then
    assert bank.remove_temporaries() == sorted(torn[::2])
