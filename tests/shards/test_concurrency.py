"""Several writers on one bank: leases keep a live run's staged files from another run's clean, a
commit refuses staged files that are gone, claims give a shard (or the catalog) to one live run,
and catalog saves merge. Local disk and a loopback S3 server (moto)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from audistill.shards import lease
from audistill.shards.bank import Bank
from audistill.shards.catalog import TeacherRecord
from audistill.shards.codecs import get_codec
from audistill.shards.errors import ShardError
from audistill.shards.layout_wds import WdsShardWriter
from audistill.shards.layout_zarr import ZarrShardWriter
from audistill.shards.reader import BankReader
from audistill.shards.segments import Segment
from audistill.shards.verify import verify_bank

from .helpers import make_bank

# a writer in another process: stages a WebDataset shard (its tars stream to disk) and stays alive
_SLOW_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from audistill.shards.bank import Bank
    from audistill.shards.segments import Segment
    bank = Bank.open(sys.argv[1])
    with bank.write_shard("slow", []) as w:
        for k in range(100000):
            w.add(Segment(f"seg-{k}", "x", num_samples=16000), np.ones(16000, np.int16), {})
            if k == 3:
                print("writing", flush=True)
            time.sleep(0.01)
""")


def _start_slow_writer(root) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _staged(root) -> list[str]:
    return sorted(p for p in os.listdir(root / "shards") if ".tmp-" in p)


def test_clean_spares_a_live_runs_staged_files_and_removes_a_killed_runs(tmp_path):
    make_bank(tmp_path / "b", "webdataset", shards=1)
    proc = _start_slow_writer(tmp_path / "b")
    try:
        staged = _staged(tmp_path / "b")
        assert staged and all("run" in p for p in staged)
        bank = Bank.open(str(tmp_path / "b"))
        # what a second `audistill extract` does as it starts, and `shards clean`
        assert bank.remove_temporaries(deep=False) == []
        assert bank.remove_temporaries() == []
        assert _staged(tmp_path / "b") == staged
        assert verify_bank(bank).ok  # a live run's staged files are not a problem
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    gone = Bank.open(str(tmp_path / "b")).remove_temporaries()
    assert set(staged) <= {p.rsplit("/", 1)[-1] for p in gone}
    assert any(p.startswith("leases/") for p in gone)  # the killed run's lease (dead by its pid)
    assert _staged(tmp_path / "b") == []
    assert [p.stem for p in (tmp_path / "b" / "leases").glob("*.json")] == [
        lease.run_id()
    ]  # this test's own


@pytest.mark.parametrize("layout", ["zarr", "webdataset"])
def test_a_commit_refuses_staged_files_another_process_deleted(tmp_path, layout, monkeypatch):
    bank, _ = make_bank(tmp_path / "b", layout, shards=1)
    writer_cls = ZarrShardWriter if layout == "zarr" else WdsShardWriter
    real_close = writer_cls.close

    def close_then_lose(self):  # staged, then removed by "another run's" clean before the commit
        counts = real_close(self)
        for p in _staged(tmp_path / "b"):
            bank.fs.remove(f"shards/{p}")
        return counts

    monkeypatch.setattr(writer_cls, "close", close_then_lose)
    with pytest.raises(ShardError, match="gone") as e:
        with bank.write_shard("lost", []) as w:
            w.add(Segment("seg-0", "x", num_samples=16000), np.ones(16000, np.int16), {})
    assert "'lost'" in str(e.value)
    assert not bank.is_committed("lost") and not bank.fs.exists("commits/lost.json")


def _foreign(run: str, heartbeat: float) -> bytes:
    """A lease / claim record of a run on another machine."""
    return json.dumps(
        {
            "run": run,
            "host": "elsewhere/x/1",
            "pid": 1,
            "heartbeat": heartbeat,
            "ttl_s": lease.LEASE_TTL_S,
        }
    ).encode()


def _bank_at(where: str, tmp_path, s3_bucket_or_none):
    if where == "local":
        return Bank.create(str(tmp_path / "b"), "zarr")
    prefix, opts = s3_bucket_or_none
    return Bank.create(f"{prefix}/b", "zarr", storage_options=opts)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def where(request):
    return request.param


@pytest.fixture
def bucket(where, request):
    return request.getfixturevalue("s3_bucket") if where == "s3" else None


def test_claims_exclude_live_runs_and_take_over_dead_ones(where, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "CLAIM_WAIT_S", 0.5)
    bank = _bank_at(where, tmp_path, bucket)
    fs = bank.fs
    assert fs.create_exclusive("locks/x/one.json", b"a") and not fs.create_exclusive(
        "locks/x/one.json", b"b"
    )
    assert fs.read_bytes("locks/x/one.json") == b"a"  # the loser wrote nothing
    other = "0123456789abcdef"
    fs.write_bytes_atomic(lease.lease_path(other), _foreign(other, time.time()))
    fs.write_bytes_atomic("locks/shards/s1.0.json", _foreign(other, time.time()))
    claim = lease.Claim(fs, "shards", "s1", wait_s=0.5)
    assert claim.try_acquire() == other  # a live run holds it
    with pytest.raises(lease.BusyError, match="s1"):
        claim.acquire()
    with pytest.raises(lease.BusyError):  # a writer of that shard waits, then says who holds it
        with bank.write_shard("s1", []):
            pass
    fs.write_bytes_atomic(
        lease.lease_path(other), _foreign(other, time.time() - 2 * lease.LEASE_TTL_S)
    )
    assert claim.try_acquire() is None  # its run is dead: taken over as the next generation
    assert fs.exists("locks/shards/s1.1.json")
    assert lease.Claim(fs, "shards", "s1").try_acquire() == lease.run_id()  # held: not twice
    claim.release()
    assert not fs.exists("locks/shards/s1.0.json") and not fs.exists("locks/shards/s1.1.json")


def test_clean_keeps_temporaries_of_live_runs_on_any_store(where, bucket, tmp_path):
    bank = _bank_at(where, tmp_path, bucket)
    fs = bank.fs
    live, dead, unleased = "1" * 16, "2" * 16, "3" * 16
    fs.write_bytes_atomic(lease.lease_path(live), _foreign(live, time.time()))
    fs.write_bytes_atomic(
        lease.lease_path(dead), _foreign(dead, time.time() - 3 * lease.LEASE_TTL_S)
    )
    temps = {run: f"shards/.tmp-s-run{run}-0a1b2c3d.zarr" for run in (live, dead, unleased)}
    for rel in temps.values():
        fs.put_many({f"{rel}/zarr.json": b"{}"})
    fs.put_many({"shards/.tmp-old-1a2b3c4d.zarr/zarr.json": b"{}"})  # a writer before leases
    gone = bank.remove_temporaries(deep=False)
    assert gone == sorted([temps[dead], "shards/.tmp-old-1a2b3c4d.zarr"])
    # `shards clean` also removes the dead run's lease; the unleased temporary is fresh: it stays
    assert bank.remove_temporaries() == [lease.lease_path(dead)]
    assert fs.exists(temps[live] + "/zarr.json") and fs.exists(temps[unleased] + "/zarr.json")


def test_catalog_saves_merge_teachers_of_other_savers(tmp_path):
    make_bank(tmp_path / "b", "zarr", shards=1)
    one, two = (
        Bank.open(str(tmp_path / "b")),
        Bank.open(str(tmp_path / "b")),
    )  # two runs, read at once
    for bank, name in ((one, "first"), (two, "second")):
        bank.register_teacher(
            TeacherRecord(
                name=name,
                source=f"test/{name}",
                dim=4,
                frame_rate=50.0,
                codec=get_codec("float16").record(),
                layers=[1],
                num_layers=2,
                revision="r1",
                fingerprint="f" * 64,
            ),
            save=False,
        )
    one.save_catalog()
    two.save_catalog()  # without the merge, 'first' would be gone from bank.json
    assert {"first", "second"} <= set(Bank.open(str(tmp_path / "b")).catalog.teachers)


def test_a_shard_another_run_committed_meanwhile_gets_only_what_it_lacks(tmp_path):
    bank, truth = make_bank(tmp_path / "b", "zarr", shards=1)
    stale = Bank.open(str(tmp_path / "b"))
    rec = bank.shard_record("shard-00000")
    stale.catalog.shards.clear()  # planned before the other run committed the shard
    segs = list(BankReader(bank))
    with stale.write_shard("shard-00000", ["speechy"], update_catalog=False) as w:
        for sd in segs:
            w.add(sd.segment, sd.audio, {"speechy": None})
    assert w.record.fields.keys() == rec.fields.keys()  # the other run's shard, untouched
    assert verify_bank(str(tmp_path / "b")).ok
    with (
        pytest.raises(ShardError, match="other segments"),
        stale.write_shard("shard-00000", ["speechy"]) as w,
    ):
        w.add(segs[0].segment, segs[0].audio, {"speechy": None})


def test_layers_another_run_added_meanwhile_are_not_added_twice(tmp_path):
    bank, _ = make_bank(tmp_path / "b", "zarr", shards=1)
    bank.register_teacher(
        TeacherRecord(
            name="late",
            source="test/late",
            dim=4,
            frame_rate=50.0,
            codec=get_codec("float32").record(),
            layers=[1],
            num_layers=2,
            revision="r1",
            fingerprint="f" * 64,
        )
    )
    one, two = (
        Bank.open(str(tmp_path / "b")),
        Bank.open(str(tmp_path / "b")),
    )  # both planned the addition
    segs = list(BankReader(one, {"speechy": [1]}, shards=["shard-00000"]))
    codec = get_codec("float32")
    import torch

    for bank_ in (one, two):
        with bank_.add_field("shard-00000", "late") as a:
            for sd in segs:
                frames = sd.segment.num_samples * 50 // 16000
                a.add(sd.segment, {1: codec.encode(torch.ones(frames, 4))})
    rec = Bank.open(str(tmp_path / "b")).read_commit_record("shard-00000")
    assert [f.name for f in rec.teacher_fields("late")] == ["late"]  # once, not as "late-f2" too
    assert verify_bank(str(tmp_path / "b")).ok
    with pytest.raises(
        Exception, match="already holds"
    ):  # a caller that knew they are there: refused
        with Bank.open(str(tmp_path / "b")).add_field("shard-00000", "late"):
            pass


_EXIT_WITH_A_DEAD_STORE = """
import sys, time
from audistill.shards import lease
from audistill.shards.fs import BankFS

fs = BankFS(sys.argv[1])
lease.hold_lease(fs)
fs.remove_file = lambda rel: time.sleep(600)  # the store stopped answering (its server gone)
lease.RELEASE_WAIT_S = 1.0
print("held", flush=True)
"""


def test_a_store_that_stopped_answering_does_not_hold_the_exit(tmp_path):
    """Leases are removed at exit, but a store that no longer answers (an S3 server gone, whose
    client retries for minutes) must not keep the process alive: the lease dies with it anyway."""
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", _EXIT_WITH_A_DEAD_STORE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "held" in r.stdout, r.stderr
    assert time.monotonic() - t0 < 60


_IDLE_LEASE = """
import json, sys, time
from audistill.shards import lease
from audistill.shards.fs import BankFS

fs = BankFS(sys.argv[1])
run = lease.hold_lease(fs)
path = lease.lease_path(run)

def beat():
    return json.loads(fs.read_bytes(path))["heartbeat"]

h0 = beat(); time.sleep(0.5); h1 = beat()     # in use (just held): refreshed
time.sleep(1.5); h2 = beat(); time.sleep(0.8); h3 = beat()   # idle past the TTL: resting
with lease.Claim(fs, "shards", "s0"):
    time.sleep(1.6); h4 = beat()               # a claim held: refreshed again, idle or not
print(json.dumps({"in_use": h1 > h0, "rests": h3 == h2, "claimed": h4 > h3}), flush=True)
"""


def _with_short_ttl(script: str, *args) -> dict:
    """Run ``script`` in a fresh process with a 0.8 s lease TTL (a beat every 0.2 s); its last
    stdout line, as JSON."""
    r = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AUDISTILL_LEASE_TTL_S": "0.8"},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_an_idle_banks_lease_rests_and_a_claim_wakes_it(tmp_path):
    """A process refreshes its lease on a bank only while it uses the bank (a claim held, or one
    taken or released within the TTL): a long-lived process that wrote many banks does not keep
    rewriting them all. The resting lease file stays until the process exits, then goes."""
    assert _with_short_ttl(_IDLE_LEASE, tmp_path) == {
        "in_use": True,
        "rests": True,
        "claimed": True,
    }
    assert not list((tmp_path / "leases").glob("*.json"))  # removed at exit, resting or not


_DELETED_BANK = """
import json, os, shutil, sys, time
from audistill.shards import lease
from audistill.shards.fs import BankFS

root = sys.argv[1]
fs = BankFS(root)
with lease.Claim(fs, "shards", "s0"):
    pass
time.sleep(0.1)                           # a beat that began while the claim was held is over
shutil.rmtree(root)                       # the bank deleted right after its last use
time.sleep(0.45)                          # two beats, still inside the TTL (not resting for idling)
gone = not os.path.exists(root)
with lease.Claim(fs, "shards", "s1"):     # a bank made again at the same path
    at_once = os.path.exists(os.path.join(root, lease.lease_path(lease.run_id())))
fs2 = BankFS(sys.argv[2])
with lease.Claim(fs2, "shards", "s0"):
    run = lease.run_id()
    os.remove(os.path.join(sys.argv[2], lease.lease_path(run)))  # cleaned while a claim is held
    time.sleep(0.6)
    back = os.path.exists(os.path.join(sys.argv[2], lease.lease_path(run)))
print(json.dumps({"stays_deleted": gone, "again_at_once": at_once, "rewritten_under_claim": back}),
      flush=True)
"""


def test_a_deleted_banks_lease_is_not_written_back(tmp_path):
    """Deleting a bank right after using it must not make its folder again: a lease gone while no
    claim is held rests instead of being rewritten (a rewrite made a stray ``leases/`` under the
    removed root, found under the benches' deleted temporary banks), so a bank made again at the
    same path gets its lease with its first claim. A lease removed while a claim is held is still
    written back: the claim needs it."""
    assert _with_short_ttl(_DELETED_BANK, tmp_path / "bank", tmp_path / "other") == {
        "stays_deleted": True,
        "again_at_once": True,  # the gone lease rested: the next claim writes it at once
        "rewritten_under_claim": True,
    }
    assert not list((tmp_path / "bank" / "leases").glob("*.json"))  # removed at exit
