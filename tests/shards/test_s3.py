"""Banks on object storage: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import dataclasses

import pytest

from audistill.shards.bank import Bank
from audistill.shards.copy import copy_bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .helpers import make_bank
from .test_bank import assert_matches

pytestmark = pytest.mark.s3


@pytest.mark.parametrize("layout", ["zarr", "webdataset"])
def test_write_read_verify_on_s3(s3_bucket, layout):
    prefix, opts = s3_bucket
    root = f"{prefix}/bank-{layout}"
    _, truth = make_bank(root, layout, storage_options=opts, shards=2, per_shard=3)
    reader = BankReader(root, storage_options=opts)
    assert assert_matches(reader, truth) == 6
    sid = sorted(truth)[2]
    assert reader.get(sid, crop=(0, 640)).audio.shape == (min(640, truth[sid][0].num_samples),)
    report = verify_bank(root, storage_options=opts)
    assert report.ok, report.broken


def test_team_pulls_only_what_it_needs_from_s3(s3_bucket, tmp_path):
    prefix, opts = s3_bucket
    _, truth = make_bank(tmp_path / "local", "zarr")
    shared = f"{prefix}/shared-bank"
    copy_bank(str(tmp_path / "local"), shared, layout="webdataset", dst_options=opts)
    assert verify_bank(shared, storage_options=opts).ok
    mine = copy_bank(shared, str(tmp_path / "mine"), teachers={"soundy": [4]}, src_options=opts)
    assert list(mine.catalog.teachers) == ["soundy"]
    reader = BankReader(str(tmp_path / "mine"))
    assert assert_matches(reader, truth) == 8
    assert mine.catalog.bytes < Bank.open(shared, opts).catalog.bytes


def test_commit_records_are_read_many_at_a_time_in_order(s3_bucket, tmp_path, monkeypatch):
    from audistill.shards.fs import BankFS

    prefix, opts = s3_bucket
    fs = BankFS(f"{prefix}/many", opts)
    local = BankFS(str(tmp_path / "many"))
    rels = [f"commits/s-{i:03d}.json" for i in range(7)]
    for i, r in enumerate(rels):
        fs.write_bytes_atomic(r, f"record {i}".encode() * (i + 1))
        local.write_bytes_atomic(r, f"record {i}".encode() * (i + 1))
    calls = []
    real = fs.fs.cat
    monkeypatch.setattr(
        fs.fs, "cat", lambda paths, **kw: calls.append(len(paths)) or real(paths, **kw)
    )
    got = list(fs.read_many(list(reversed(rels)), batch=3))
    assert got == [
        (r, f"record {int(r[10:13])}".encode() * (int(r[10:13]) + 1)) for r in reversed(rels)
    ]
    assert calls == [3, 3]  # and the last one alone, by a plain read
    assert list(local.read_many(rels, batch=3)) == [(r, fs.read_bytes(r)) for r in rels]
    with pytest.raises(FileNotFoundError):
        list(fs.read_many(["commits/s-000.json", "commits/gone.json"]))

    root = f"{prefix}/bank"
    make_bank(root, "zarr", storage_options=opts, shards=3, per_shard=2)
    bank = Bank.open(root, opts)
    assert (
        sorted(bank.commit_records()) == sorted(bank.catalog.shards)
        and len(bank.catalog.shards) == 3
    )


def test_shards_cli_reaches_the_store_through_storage_options(s3_bucket, tmp_path):
    import json
    import os
    import subprocess
    import sys

    prefix, opts = s3_bucket
    root = f"{prefix}/cli-bank"
    make_bank(root, "zarr", storage_options=opts, shards=2, per_shard=2)
    (tmp_path / "so.json").write_text(json.dumps(opts))
    env = {
        k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"
    }  # only the flag knows the server

    def cli(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "audistill.tools.cli",
                "shards",
                *args,
                "--storage-options",
                f"@{tmp_path / 'so.json'}",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    r = cli("info", root, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["segments"] == 4
    r = cli("verify", root, "--quick")
    assert r.returncode == 0 and "intact" in r.stdout, r.stderr
    r = cli("export", root, str(tmp_path / "mine"), "--teacher", "speechy", "--layers", "1")
    assert r.returncode == 0, r.stderr
    assert verify_bank(str(tmp_path / "mine")).ok  # the local side took no storage options
    r = cli("compare", root, str(tmp_path / "mine"), "--json")  # shared bank vs local export
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res) == ["speechy/L1"]  # the one layer both banks hold
    assert res["speechy/L1"]["frames"] > 0 and res["speechy/L1"]["variance_lost"] == 0.0
    r = cli("sync", root)
    assert r.returncode == 0 and "0 shard(s) added" in r.stdout, r.stderr


@pytest.mark.parametrize("layout", ["zarr", "webdataset"])
def test_opening_a_shard_checks_sizes_from_one_listing(s3_bucket, monkeypatch, layout):
    from audistill.shards.errors import ShardError
    from audistill.shards.fs import BankFS

    prefix, opts = s3_bucket
    root = f"{prefix}/sizes-{layout}"
    make_bank(
        root, layout, storage_options=opts, shards=2, per_shard=2
    )  # two shards: a prefix, not the folder
    bank = Bank.open(root, opts)
    name = sorted(bank.catalog.shards)[0]
    heads = []
    real = BankFS.size
    monkeypatch.setattr(BankFS, "size", lambda self, rel: heads.append(rel) or real(self, rel))
    bank.shard_reader(name, check="size")
    assert heads == []  # every file's size came from the listing
    big = "/c/" if layout == "zarr" else ".tar"
    victim, gone = sorted(f for f in bank.shard_files(name) if big in f)[:2]
    good = bank.fs.read_bytes(victim)
    bank.fs.fs.pipe_file(bank.fs.path(victim), good[:-3])  # truncated
    with pytest.raises(ShardError, match=f"file {victim} has {len(good) - 3} bytes"):
        bank.shard_reader(name, check="size")
    bank.fs.fs.pipe_file(bank.fs.path(victim), good)
    bank.fs.remove(gone)
    with pytest.raises(ShardError, match=f"file {gone} is missing"):
        bank.shard_reader(name, check="size")


def test_verify_on_s3_lists_each_zarr_shard_once_and_checks_shards_concurrently(
    s3_bucket, monkeypatch
):
    """verify asked each file's existence and size (two HEADs a file, ~50 files a shard), one
    shard after another; a damaged bank reports the same with 1 worker as with 8."""
    from audistill.shards.fs import BankFS

    prefix, opts = s3_bucket
    root = f"{prefix}/verify-many"
    make_bank(root, "zarr", storage_options=opts, shards=4, per_shard=2)
    bank = Bank.open(root, opts)
    names = sorted(bank.catalog.shards)
    heads = []
    for meth in ("size", "exists"):
        real = getattr(BankFS, meth)
        monkeypatch.setattr(
            BankFS, meth, lambda self, rel, _r=real: heads.append(rel) or _r(self, rel)
        )
    assert verify_bank(root, storage_options=opts, checksums=False).ok
    assert not [h for h in heads if h.startswith("shards/")]  # sizes from one listing per shard
    victim = sorted(f for f in bank.shard_files(names[1]) if "/c/" in f)[0]
    good = bank.fs.read_bytes(victim)
    bank.fs.fs.pipe_file(
        bank.fs.path(victim), good[:-1] + bytes([good[-1] ^ 1])
    )  # same size, one bit off
    bank.fs.remove(sorted(f for f in bank.shard_files(names[3]) if "/c/" in f)[0])
    one, many = (verify_bank(root, storage_options=opts, workers=w) for w in (1, 8))
    assert one.to_json() == many.to_json()
    assert sorted(one.broken) == [names[1], names[3]] and one.shards_checked == 4
    assert (
        "sha256 mismatch" in one.broken[names[1]][0] and "missing file" in one.broken[names[3]][0]
    )


def test_writing_a_webdataset_shard_lists_only_its_own_name_prefix(s3_bucket, monkeypatch):
    """Before writing, leftovers of a crashed writer of the shard are removed: found by listing
    its name prefix, not the whole shards/ folder (100 000 shards' files, per shard written)."""
    from audistill.shards.fs import BankFS

    prefix, opts = s3_bucket
    root = f"{prefix}/wds-prefix"
    bank, truth = make_bank(root, "webdataset", storage_options=opts, shards=2, per_shard=1)
    bank.fs.write_bytes_atomic("shards/again.speechy.tar", b"half of an earlier try")
    listed = []
    real = BankFS.listdir
    monkeypatch.setattr(BankFS, "listdir", lambda self, rel: listed.append(rel) or real(self, rel))
    seg, audio, _ = next(iter(truth.values()))
    seg = dataclasses.replace(
        seg, id=f"{seg.id}-2"
    )  # another segment: one stored twice is a finding of its own
    with bank.write_shard("again", []) as w:
        w.add(seg, audio, {})
    assert "shards" not in listed
    assert not bank.fs.exists("shards/again.speechy.tar")  # every leftover of the shard, by prefix
    assert verify_bank(root, storage_options=opts).ok


def test_an_extraction_start_cleans_new_shards_temporaries_from_one_prefix_listing(
    s3_bucket, monkeypatch
):
    from audistill.shards.fs import BankFS

    prefix, opts = s3_bucket
    root = f"{prefix}/temps"
    bank, _ = make_bank(root, "zarr", storage_options=opts, shards=2, per_shard=1)
    bank.fs.write_bytes_atomic("shards/.tmp-crashed-1a2b3c4d.zarr/audio/zarr.json", b"{}")
    bank.fs.write_bytes_atomic("shards/shard-00000.zarr/.tmp-late-5e6f7a8b/zarr.json", b"{}")
    walked = []
    real = BankFS.walk_files
    monkeypatch.setattr(
        BankFS, "walk_files", lambda self, rel: walked.append(rel) or real(self, rel)
    )
    assert bank.remove_temporaries(deep=False) == ["shards/.tmp-crashed-1a2b3c4d.zarr"]
    assert walked == []  # no walk of every shard's files
    assert bank.remove_temporaries() == [
        "shards/shard-00000.zarr/.tmp-late-5e6f7a8b"
    ]  # `shards clean`
    assert verify_bank(root, storage_options=opts).ok
