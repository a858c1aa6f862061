"""Dask LocalCluster and --num-workers/--worker-index slices give the same bank as one process."""

import json

import pytest

from audistill.extract.dask_run import extract_dask
from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank


def _cfg(**kw):
    return ExtractConfig(
        max_seconds=1.5,
        shard_seconds=4.0,
        loader_workers=0,
        batch_seconds=6.0,
        domain_map={"speech": "speech", "music": "music"},
        **kw,
    )


def _content(root):
    return {
        sd.segment.id: (
            sd.shard,
            sd.audio.tobytes(),
            {t: {k: v.tobytes() for k, v in f.items()} for t, f in sd.features.items()},
        )
        for sd in BankReader(root)
    }


@pytest.fixture
def specs(tiny_dir):
    return [
        TeacherSpec(
            name="wavlm", source=str(tiny_dir("wavlm")), layers=[1, 3], domains=("speech",)
        ),
        TeacherSpec(
            name="w2v", source=str(tiny_dir("wav2vec2")), layers="sparse:1", codec="bfloat16"
        ),
    ]


@pytest.mark.parametrize("per_task", [1, 2])
def test_dask_local_cluster_equals_single_process(specs, corpus, tmp_path, per_task):
    single = extract([str(corpus)], specs, str(tmp_path / "one"), _cfg())
    seen = {"total": None, "n": 0, "sec": 0.0}

    def factory(total_segments, total_seconds):
        seen["total"] = total_segments

        def update(n, sec):
            seen["n"] += n
            seen["sec"] += sec

        return update

    dist = extract_dask(
        [str(corpus)],
        specs,
        str(tmp_path / "dask"),
        _cfg(),
        workers=2,
        shards_per_task=per_task,
        progress_factory=factory,
    )
    assert (
        seen["total"] == seen["n"] == dist.segments_planned
        and abs(seen["sec"] - dist.seconds) < 1e-6
    )
    assert dist.shards_run == single.shards_run > 2 and dist.failed == 0
    assert verify_bank(str(tmp_path / "dask")).ok
    assert _content(str(tmp_path / "dask")) == _content(str(tmp_path / "one"))
    a, b = Bank.open(str(tmp_path / "one")).catalog, Bank.open(str(tmp_path / "dask")).catalog
    assert a.teachers == b.teachers and set(a.shards) == set(b.shards)
    again = extract_dask([str(corpus)], specs, str(tmp_path / "dask"), _cfg(), workers=2)
    assert again.shards_run == 0 and again.shards_skipped == single.shards_run


def test_a_failed_task_keeps_what_it_committed_and_records_the_rest(
    specs, corpus, tmp_path, monkeypatch
):
    import audistill.extract.dask_run as dask_run

    real = dask_run.run_shards

    def first_then_fail(bank, shards, *a, **kw):  # commits its first shard, then dies
        real(bank, shards[:1], *a, **kw)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(
        dask_run, "run_shards", first_then_fail
    )  # threads: the LocalCluster runs in this process
    s = extract_dask(
        [str(corpus)], specs, str(tmp_path / "b"), _cfg(), workers=1, retries=0, shards_per_task=3
    )
    bank = Bank.open(str(tmp_path / "b"))
    committed = set(bank.catalog.shards)
    groups = -(-s.shards_planned // 3)
    assert len(committed) == groups and s.shards_planned > groups
    failed_shards = {e["reason"].split()[1] for e in s.errors}
    assert failed_shards.isdisjoint(committed) and len(failed_shards) == s.shards_planned - groups
    assert (
        all("worker lost" in e["reason"] for e in s.errors) and verify_bank(str(tmp_path / "b")).ok
    )
    monkeypatch.setattr(dask_run, "run_shards", real)
    again = extract_dask([str(corpus)], specs, str(tmp_path / "b"), _cfg(), workers=1)
    assert (
        again.shards_skipped == groups
        and again.shards_run == s.shards_planned - groups
        and again.failed == 0
    )


def test_slices_cover_the_corpus_exactly_once(specs, corpus, tmp_path):
    single = extract([str(corpus)], specs, str(tmp_path / "one"), _cfg())
    for i in range(3):
        extract([str(corpus)], specs, str(tmp_path / "sl"), _cfg(num_workers=3, worker_index=i))
    bank = Bank.open(str(tmp_path / "sl"))
    assert set(bank.sync_catalog()) == set(Bank.open(str(tmp_path / "one")).catalog.shards)
    assert verify_bank(str(tmp_path / "sl")).ok
    assert _content(str(tmp_path / "sl")) == _content(str(tmp_path / "one"))
    assert bank.catalog.num_segments == single.segments_written


def test_slices_record_every_error_without_racing(specs, corpus, tmp_path):
    """Each slice writes its errors to a file of its own (appending to one errors.jsonl from
    parallel slices is a read-modify-write that loses records); `shards sync` merges them, and
    the inputs unusable at planning time are recorded once (by slice 0)."""
    import json
    import shutil

    from typer.testing import CliRunner

    from audistill.tools.cli.app import app

    bad = tmp_path / "with_garbage"
    shutil.copytree(corpus, bad)
    (bad / "speech" / "garbage.wav").write_bytes(
        b"RIFF\x00\x00 this is not audio"
    )  # unusable when planned
    root = tmp_path / "sl"
    runs = [
        extract([str(bad)], specs, str(root), _cfg(num_workers=3, worker_index=i)) for i in range(3)
    ]
    assert sum(r.failed for r in runs) == 1 and runs[0].failed == 1
    parts = sorted((root / "errors.d").glob("slice-*.jsonl"))
    assert len(parts) == 1 and parts[0].name.startswith("slice-00000-of-00003-")
    assert not (root / "errors.jsonl").exists()
    r = CliRunner().invoke(app, ["shards", "sync", str(root)])
    assert r.exit_code == 0 and "1 slice error file(s) merged" in " ".join(r.output.split()), (
        r.output
    )
    recs = [json.loads(x) for x in (root / "errors.jsonl").read_text().splitlines()]
    assert [x["file"].endswith("garbage.wav") for x in recs] == [True]
    assert not list((root / "errors.d").glob("*.jsonl"))
    assert verify_bank(str(root)).ok


def test_slices_wait_for_slice_zero_which_alone_writes_the_catalog(
    tiny_dir, corpus, tmp_path, monkeypatch
):
    """A slice started before slice 0 waits; only slice 0 registers teachers and fits codecs, so
    no slice overwrites another's fitted states in bank.json or encodes with a state that lost."""
    import threading

    import audistill.extract.run as run_mod
    from audistill.extract.errors import ExtractError
    from audistill.shards.bank import Bank as BankCls

    monkeypatch.setattr(run_mod, "SLICE_POLL_S", 0.05)
    spec = [
        TeacherSpec(name="wavlm", source=str(tiny_dir("wavlm")), layers=[1, 3], codec="int8-delta")
    ]
    root = tmp_path / "sl"
    with pytest.raises(ExtractError, match="slice 0 registers the teachers"):
        extract(
            [str(corpus)], spec, str(root), _cfg(num_workers=2, worker_index=1, slice_wait_s=0.3)
        )
    assert not (root / "bank.json").exists()  # a waiting slice writes nothing

    saves, catalog_writes = [], []
    real_state, real_save = BankCls.save_codec_state, BankCls.save_catalog
    monkeypatch.setattr(
        BankCls,
        "save_codec_state",
        lambda self, *a, **k: saves.append(a[:2]) or real_state(self, *a, **k),
    )
    monkeypatch.setattr(
        BankCls,
        "save_catalog",
        lambda self: catalog_writes.append(threading.current_thread().name) or real_save(self),
    )
    out = {}
    late = threading.Thread(
        target=lambda: out.setdefault(
            "s1",
            extract(
                [str(corpus)],
                spec,
                str(root),
                _cfg(num_workers=2, worker_index=1, slice_wait_s=120),
            ),
        ),
        name="slice-1",
    )
    late.start()
    out["s0"] = extract([str(corpus)], spec, str(root), _cfg(num_workers=2, worker_index=0))
    late.join(120)
    assert "s1" in out and out["s0"].shards_run > 0 and out["s1"].shards_run > 0
    assert sorted(saves) == [("wavlm", 1), ("wavlm", 3)]  # fitted once, by slice 0
    assert "slice-1" not in catalog_writes
    bank = BankCls.open(str(root))
    bank.sync_catalog()
    single = extract([str(corpus)], spec, str(tmp_path / "one"), _cfg())
    assert _content(str(root)) == _content(str(tmp_path / "one")) and single.failed == 0
    assert verify_bank(str(root)).ok


def test_dask_starts_as_one_process_does(specs, corpus, tmp_path):
    """The coordinator's start-up is extract()'s: slices' error files are merged into errors.jsonl
    (a Dask run did not), and slices of a Dask run are refused, not run whole by every slice."""
    from audistill.extract.errors import ExtractError
    from audistill.extract.run import append_errors

    root = str(tmp_path / "b")
    first = extract([str(corpus)], specs, root, _cfg())
    rec = {"segment": "s1", "file": "lost.wav", "reason": "unreadable"}
    append_errors(Bank.open(root), [rec], part="slice-00001-of-00002-abcdef12")
    again = extract_dask([str(corpus)], specs, root, _cfg(), workers=1)
    assert again.shards_skipped == first.shards_run and again.shards_run == 0
    assert not list((tmp_path / "b" / "errors.d").glob("*.jsonl"))
    assert [json.loads(x) for x in (tmp_path / "b" / "errors.jsonl").read_text().splitlines()] == [
        rec
    ]
    with pytest.raises(ExtractError, match="slices"):
        extract_dask([str(corpus)], specs, root, _cfg(num_workers=2, worker_index=1), workers=1)
