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
        secret.write_bytes(b"SECRET" * (path.stat().st_size // 6) + b"S" * (path.stat().st_size % 6))
        os.remove(path)
        os.symlink(secret, path)
    else:  # a folder of the shard moved outside and linked back
        folder = path.parent
        os.rename(folder, secret)
        os.symlink(secret, folder)
    with pytest.raises(BankError, match="symbolic link"):
        list(BankReader(str(tmp_path / "b")))
    with pytest.raises(BankError, match="symbolic link"):
        copy_bank(str(tmp_path / "b"), str(tmp_path / "out"), layout="webdataset" if layout == "zarr" else "zarr")
    out = tmp_path / "out"
    assert not out.exists() or not any(b"SECRET" in p.read_bytes() for p in out.rglob("*") if p.is_file())
    report = verify_bank(str(tmp_path / "b"))
    assert not report.ok and "symbolic link" in str(report.broken)
