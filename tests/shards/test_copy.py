"""Copying banks (convert, export, recode) at scale: shards copied concurrently, the catalog
saved now and then rather than after every shard, and an interrupted copy resumed."""

from __future__ import annotations

import numpy as np
import pytest

import audistill.shards.copy as copy_mod
from audistill.shards.bank import Bank
from audistill.shards.copy import copy_bank, recode_bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .helpers import make_bank
from .test_bank import assert_matches

LAYOUTS = ["zarr", "webdataset"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shards_are_copied_concurrently_and_the_catalog_is_not_rewritten_per_shard(
    tmp_path, layout, monkeypatch
):
    _, truth = make_bank(tmp_path / "a", layout, shards=8, per_shard=2)
    saves = []
    real = Bank.save_catalog
    monkeypatch.setattr(Bank, "save_catalog", lambda self: saves.append(self.root) or real(self))
    done = []
    out = copy_bank(
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        layout="webdataset" if layout == "zarr" else "zarr",
        workers=4,
        progress=done.append,
    )
    assert sorted(done) == sorted(out.catalog.shards) and len(done) == 8
    assert len([r for r in saves if r == out.root]) <= 4  # not one per shard (O(shards^2) bytes)
    assert assert_matches(BankReader(str(tmp_path / "b")), truth) == 16
    assert verify_bank(str(tmp_path / "b")).ok


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_interrupted_copy_resumes_where_it_stopped(tmp_path, layout, monkeypatch):
    _, truth = make_bank(tmp_path / "a", layout, shards=6, per_shard=2)
    real = copy_mod._copy_shard
    copied = []

    def flaky(reader, target, shard, wanted):
        if shard == "shard-00003":
            raise OSError("the network went away")
        copied.append(shard)
        return real(reader, target, shard, wanted)

    monkeypatch.setattr(copy_mod, "_copy_shard", flaky)
    with pytest.raises(OSError, match="went away"):
        copy_bank(str(tmp_path / "a"), str(tmp_path / "b"), teachers={"speechy": None}, workers=1)
    half = Bank.open(str(tmp_path / "b"))
    assert (
        sorted(half.catalog.shards) == sorted(copied) and "shard-00003" not in half.catalog.shards
    )
    assert verify_bank(half).ok  # nothing half-written among what it holds

    monkeypatch.setattr(copy_mod, "_copy_shard", lambda *a: copied.append(a[2]) or real(*a))
    before = len(copied)
    out = copy_bank(str(tmp_path / "a"), str(tmp_path / "b"), teachers={"speechy": None}, workers=2)
    assert sorted(copied[before:]) == sorted(
        set(out.catalog.shards) - set(half.catalog.shards)
    )  # only the rest
    assert len(out.catalog.shards) == 6 and verify_bank(out).ok
    assert assert_matches(BankReader(out), truth) == 12


def test_recode_gives_the_same_bank_with_any_number_of_workers(tmp_path):
    make_bank(tmp_path / "a", "zarr", shards=4, per_shard=2)
    one = recode_bank(str(tmp_path / "a"), str(tmp_path / "one"), "int8-delta", workers=1)
    many = recode_bank(str(tmp_path / "a"), str(tmp_path / "many"), "int8-delta", workers=3)
    assert {t: r.codec_state for t, r in one.catalog.teachers.items()} == {
        t: r.codec_state for t, r in many.catalog.teachers.items()
    }
    for a, b in zip(BankReader(one), BankReader(many), strict=True):
        assert a.segment == b.segment
        for t, layers in a.features.items():
            for layer, x in layers.items():
                np.testing.assert_array_equal(x, b.features[t][layer])


def test_recode_fits_on_shards_spread_over_the_bank_not_on_all_of_it(tmp_path, monkeypatch):
    from audistill.shards.reader import spread_order

    assert spread_order(8) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert all(sorted(spread_order(n)) == list(range(n)) for n in range(1, 70))
    make_bank(tmp_path / "a", "zarr", shards=8, per_shard=2)
    read = []
    real = BankReader.iter_shard
    monkeypatch.setattr(
        BankReader,
        "iter_shard",
        lambda self, shard: (read.append((self.audio, shard)), real(self, shard))[1],
    )
    recode_bank(
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "int8-delta",
        teachers={"speechy": [1]},
        fit_frames=40,
    )
    fitting = [s for audio, s in read if not audio]  # the fit's reader reads no audio
    assert (
        fitting
        and fitting == ["shard-00000", "shard-00004", "shard-00002", "shard-00006"][: len(fitting)]
    )
    assert len(fitting) < 8
    assert sorted(s for audio, s in read if audio) == [
        f"shard-{i:05d}" for i in range(8)
    ]  # the copy reads all
