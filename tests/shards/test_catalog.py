"""bank.json schema 2: shard entries without their file lists (those stay in commits/NAME.json),
reading schema-1 banks, and what the split must never lose."""

from __future__ import annotations

import json
import os
import time

import pytest

from audistill.shards.bank import Bank
from audistill.shards.catalog import SCHEMA_VERSION, ShardRecord
from audistill.shards.errors import ShardError
from audistill.shards.info import bank_info
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .helpers import make_bank
from .test_bank import assert_matches

LAYOUTS = ["zarr", "webdataset"]


def _commit(root, name) -> dict:
    return json.loads((root / "commits" / f"{name}.json").read_text())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_catalog_keeps_totals_and_commit_records_keep_the_files(tmp_path, layout):
    root = tmp_path / "b"
    make_bank(root, layout, shards=2, per_shard=3)
    cat = json.loads((root / "bank.json").read_text())
    assert cat["schema_version"] == SCHEMA_VERSION == 2
    bank = Bank.open(str(root))
    for name, entry in cat["shards"].items():
        assert "files" not in entry
        commit = _commit(root, name)
        files = commit["files"]
        assert bank.shard_files(name) == files
        assert entry["bytes"] == sum(m["bytes"] for m in files.values()) == commit["bytes"]
        assert entry["num_files"] == len(files)
        assert entry["commit_bytes"] == (root / "commits" / f"{name}.json").stat().st_size
        for fname, f in entry["fields"].items():
            mine = [
                p
                for p in files
                if p.split("/")[-1].startswith(f"{name}.{fname}.") or f"/{fname}/" in p
            ]
            assert f["bytes"] == sum(files[p]["bytes"] for p in mine) > 0
            assert (f["layer_bytes"] is None) == (f["teacher"] is None)
            if f["teacher"] is not None:
                assert sorted(int(k) for k in f["layer_bytes"]) == f["layers"]
                assert 0 < sum(f["layer_bytes"].values()) <= f["bytes"]
    assert bank.catalog.bytes == sum(e["bytes"] for e in cat["shards"].values())


def _as_schema_1(root) -> dict:
    """Rewrite a bank as audistill wrote it before schema 2: every file listed in bank.json, and
    commit records and catalog entries without per-field bytes or commit sizes."""
    cat = json.loads((root / "bank.json").read_text())
    info_before = bank_info(str(root))
    cat["schema_version"] = 1
    for name in cat["shards"]:
        commit = _commit(root, name)
        for f in commit["fields"].values():
            del f["bytes"], f["layer_bytes"]
        del commit["num_files"]
        (root / "commits" / f"{name}.json").write_text(json.dumps(commit))
        cat["shards"][name] = commit
    (root / "bank.json").write_text(json.dumps(cat, indent=1))
    return info_before


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_schema_1_bank_reads_verifies_and_is_rewritten_as_schema_2(tmp_path, layout, monkeypatch):
    root = tmp_path / "b"
    _, truth = make_bank(root, layout, shards=2, per_shard=3)
    info_before = _as_schema_1(root)
    old = Bank.open(str(root))
    assert all(
        type(r) is ShardRecord and r.commit_bytes is None for r in old.catalog.shards.values()
    )  # lists dropped
    info = bank_info(old)
    assert info["bytes"] == info_before["bytes"] and info["teachers"] == info_before["teachers"]
    assert assert_matches(BankReader(old), truth) == 6
    assert verify_bank(str(root)).ok

    assert old.sync_catalog() == []  # the same records; their sizes are learnt once
    cat = json.loads((root / "bank.json").read_text())
    assert cat["schema_version"] == 2 and all(
        "files" not in e and e["commit_bytes"] for e in cat["shards"].values()
    )
    reads = []
    real = type(old.fs).read_many
    monkeypatch.setattr(
        type(old.fs),
        "read_many",
        lambda self, rels, **kw: reads.extend(rels) or real(self, rels, **kw),
    )
    hour_ago = time.time() - 3600
    for f in (root / "commits").iterdir():
        os.utime(
            f, (hour_ago, hour_ago)
        )  # older than the catalog: only a size can tell a record apart
    assert Bank.open(str(root)).sync_catalog() == [] and reads == []
    assert verify_bank(str(root)).ok


@pytest.mark.parametrize("layout", LAYOUTS)
def test_adding_a_field_builds_on_the_commit_record_not_a_stale_catalog(tmp_path, layout):
    """Two processes add layers to one shard, each from a catalog read before the other's add:
    the second must keep the first's field (it used to write back its stale copy and drop it)."""
    root = tmp_path / "b"
    _, truth = make_bank(root, layout, shards=1, per_shard=3)
    a, b = Bank.open(str(root)), Bank.open(str(root))
    (shard,) = a.catalog.shards
    reader = a.shard_reader(shard)
    segs = reader.segments
    for bank, teacher, layer in ((a, "speechy", 1), (b, "soundy", 2)):
        field = next(f.name for f in bank.catalog.shards[shard].teacher_fields(teacher))
        bank.catalog.teachers[teacher].layers = sorted({*bank.catalog.teachers[teacher].layers, 9})
        with bank.add_field(shard, teacher, layers=[9]) as add:
            for i, seg in enumerate(segs):
                parts = reader.read_parts(field, layer, i) if reader.covered(field, i) else None
                add.add(seg, None if parts is None else {9: parts})
    commit = _commit(root, shard)
    assert {f["teacher"]: f["layers"] for f in commit["fields"].values() if f["layers"] == [9]} == {
        "speechy": [9],
        "soundy": [9],
    }
    fresh = Bank.open(str(root))
    fresh.sync_catalog()
    assert {9} <= fresh.catalog.shards[shard].layers_of("speechy") and {9} <= fresh.catalog.shards[
        shard
    ].layers_of("soundy")
    assert verify_bank(str(root)).ok
    assert assert_matches(BankReader(fresh, {"speechy": [1, 2, 3], "soundy": [2, 4]}), truth) == 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_missing_or_damaged_commit_record_is_named(tmp_path, layout):
    root = tmp_path / "b"
    make_bank(root, layout, shards=3, per_shard=2)
    names = sorted(Bank.open(str(root)).catalog.shards)
    (root / "commits" / f"{names[0]}.json").unlink()
    (root / "commits" / f"{names[1]}.json").write_text('{"name": "truncated')
    bank = Bank.open(str(root))
    with pytest.raises(
        ShardError, match=f"commit record commits/{names[0]}.json is missing.*{names[0]}"
    ):
        bank.shard_reader(names[0])
    with pytest.raises(ShardError, match=f"commit record commits/{names[1]}.json is unreadable"):
        bank.shard_reader(names[1])
    bank.shard_reader(names[1], check="none")  # the data itself is readable without the check
    bank.shard_reader(names[2])
    report = verify_bank(str(root))
    assert sorted(report.broken) == names[:2]
    assert any("no commit record" in p for p in report.broken[names[0]])
    assert not any(
        "extra file" in p or "stray" in p for n in names[:2] for p in report.broken[n]
    )  # said once, not per file
    assert any("unreadable" in p for p in report.broken[names[1]])
    assert report.shards_checked == 3


def test_a_bank_whose_catalog_was_lost_is_not_recreated_over_its_shards(tmp_path):
    """A new catalog would register the teachers again and fit new codec states over the files
    the shards were encoded with: every committed shard would decode wrong without an error."""
    from audistill.shards.errors import CatalogError

    root = tmp_path / "b"
    make_bank(root, "zarr", codec="int8-delta", shards=2, per_shard=2)
    (root / "bank.json").unlink()
    with pytest.raises(CatalogError, match="2 committed shard.*no bank.json.*restore bank.json"):
        Bank.create(str(root), "zarr")
    assert not (root / "bank.json").exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shards_encoded_with_another_codec_state_are_refused(tmp_path, layout):
    """Each commit record names the fitted codec state of every layer it holds; a catalog whose
    state differs (restored from another bank, a state refitted and re-referenced) is caught when
    the shard is opened and by verify, not decoded into wrong values."""
    import numpy as np

    from audistill.shards.codecs import get_codec

    from ..datagen import outlier_features

    root = tmp_path / "b"
    _, truth = make_bank(root, layout, codec="int8-delta", shards=2, per_shard=3)
    bank = Bank.open(str(root))
    (name, *_) = sorted(bank.catalog.shards)
    full = bank.full_record(name)
    assert full.codec_states == {
        "speechy": {
            str(x): bank.catalog.teachers["speechy"].codec_state[str(x)]["sha256"]
            for x in (1, 2, 3)
        },
        "soundy": {
            str(x): bank.catalog.teachers["soundy"].codec_state[str(x)]["sha256"] for x in (2, 4)
        },
    }
    assert assert_matches(BankReader(bank), truth) == 6

    other = get_codec("int8-delta").fit(outlier_features(np.random.default_rng(7), 512, 12))
    bank.catalog.teachers["speechy"].codec_state.pop("2")
    bank.save_codec_state("speechy", 2, other)  # another state under the same teacher and layer
    with pytest.raises(
        ShardError, match=f"field 'speechy' layer 2 was encoded with codec state .*'{name}'"
    ):
        bank.shard_reader(name)
    with pytest.raises(ShardError, match="would decode wrong"):
        list(
            BankReader(bank, {"speechy": [1]})
        )  # any layer of the shard: the shard is refused on open
    report = verify_bank(str(root))
    assert sorted(report.broken) == sorted(bank.catalog.shards)
    assert all(any("codec state" in p for p in ps) for ps in report.broken.values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_lost_catalog_is_rebuilt_from_the_commit_records(tmp_path, layout):
    from audistill.shards.errors import CatalogError

    root = tmp_path / "b"
    _, truth = make_bank(root, layout, codec="int8-delta", shards=3, per_shard=2)
    before = bank_info(str(root))
    with pytest.raises(CatalogError, match="has a bank.json"):
        Bank.rebuild(str(root))
    (root / "bank.json").unlink()
    with pytest.raises(CatalogError, match="shards rebuild"):
        Bank.create(str(root), layout)
    rebuilt = Bank.rebuild(str(root))
    after = bank_info(str(root))
    assert (
        after["teachers"] == before["teachers"]
        and after["hours_per_domain"] == before["hours_per_domain"]
    )
    assert (after["shards"], after["segments"], after["bytes"]) == (
        before["shards"],
        before["segments"],
        before["bytes"],
    )
    assert after["stats_layers"] == {}  # not in the records: `shards stats` makes them again
    assert verify_bank(str(root)).ok
    assert assert_matches(BankReader(rebuilt), truth) == 6


def test_a_rebuild_refuses_what_would_not_give_back_the_same_catalog(tmp_path):
    import numpy as np

    from audistill.shards.codecs import get_codec
    from audistill.shards.errors import CatalogError

    from ..datagen import outlier_features

    root = tmp_path / "b"
    make_bank(root, "zarr", codec="int8-delta", shards=3, per_shard=2)
    names = sorted(Bank.open(str(root)).catalog.shards)
    (root / "bank.json").unlink()
    # a shard encoded with another codec state than the others (e.g. from another bank)
    rec = _commit(root, names[1])
    other = get_codec("int8-delta").fit(outlier_features(np.random.default_rng(9), 512, 12))
    np.savez(
        root / "codec_state" / "speechy" / "L02-other.npz",
        **{k: np.asarray(v) for k, v in other.items()},
    )
    import hashlib

    sha = hashlib.sha256(
        (root / "codec_state" / "speechy" / "L02-other.npz").read_bytes()
    ).hexdigest()
    rec["teachers"]["speechy"]["codec_state"]["2"] = {
        "path": "codec_state/speechy/L02-other.npz",
        "sha256": sha,
    }
    rec["codec_states"]["speechy"]["2"] = sha
    (root / "commits" / f"{names[1]}.json").write_text(json.dumps(rec))
    # and a record from before teacher records were kept
    old = _commit(root, names[2])
    del old["teachers"]
    (root / "commits" / f"{names[2]}.json").write_text(json.dumps(old))
    with pytest.raises(CatalogError) as e:
        Bank.rebuild(str(root))
    msg = str(e.value)
    assert (
        f"teacher 'speechy' layers ['2']: shard {names[1]} was encoded with other codec states"
        in msg
    )
    assert f"1 commit record(s) predate teacher records (e.g. {names[2]})" in msg
    assert not (root / "bank.json").exists()  # nothing that looks complete
