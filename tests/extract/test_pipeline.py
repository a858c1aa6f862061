import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audistill.extract.errors import ExtractError, TooManyFailures
from audistill.extract.run import ExtractConfig, check_failures, dry_run, extract
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import Teacher, load_teacher
from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .conftest import run_cli, write_wav

DOMAINS = {"speech": "speech", "music": "music"}


def _cfg(**kw):
    base = dict(
        max_seconds=2.0, shard_seconds=5.0, domain_map=DOMAINS, loader_workers=0, batch_seconds=8.0
    )
    return ExtractConfig(**{**base, **kw})


def _specs(tiny_dir):
    return [
        TeacherSpec(
            name="wavlm",
            source=str(tiny_dir("wavlm")),
            layers="sparse:2",
            domains=("speech",),
            home_domain="speech",
            codec="float32",
        ),
        TeacherSpec(name="hubert", source=str(tiny_dir("hubert")), layers=[0, 3], codec="float16"),
    ]


@pytest.mark.parametrize(
    ("layout", "writer_kind"), [("zarr", "thread"), ("webdataset", "thread"), ("zarr", "process")]
)
def test_bank_features_equal_direct_extraction(tiny_dir, corpus, tmp_path, layout, writer_kind):
    """Process writers get each batch part through shared memory (encode.Rows): same content."""
    specs = _specs(tiny_dir)
    s = extract(
        [str(corpus)],
        specs,
        str(tmp_path / "bank"),
        _cfg(layout=layout, loader_workers=2, writer_kind=writer_kind),
    )
    assert s.failed == 0 and s.segments_written == s.segments_planned > 6 and s.shards_run > 1
    assert s.writer_kind == writer_kind
    assert set(s.stages) == {"loader", "launch", "device_wait", "collect", "writers"}
    assert (
        all(v >= 0 for v in s.stages.values()) and sum(s.stages.values()) <= s.run_s
    )  # one thread's split
    # every decoded sample went through the device once, padding on top
    assert s.real_samples == round(s.seconds * 16000) and s.padded_samples >= s.real_samples
    assert 0 < s.padding_efficiency <= 1
    # one commit time per shard (stamped by the writer, thread or process), within the run
    assert len(s.commits) == s.shards_run and sum(sec for _, sec in s.commits) == pytest.approx(
        s.seconds
    )
    assert s.shards_run >= 3 and s.pace_sps() > 0
    json.dumps(s.to_json())
    assert verify_bank(str(tmp_path / "bank")).ok
    bank = Bank.open(str(tmp_path / "bank"))
    assert (
        bank.catalog.teachers["wavlm"].domains == ["speech"]
        and bank.catalog.teachers["hubert"].domains == []
    )
    teachers = {sp.name: load_teacher(sp) for sp in specs}
    reader = BankReader(bank)
    seen = 0
    for sd in reader:
        seen += 1
        seg = sd.segment
        assert sd.audio.dtype == np.int16 and len(sd.audio) == seg.num_samples
        wave, _ = _reference_audio(seg, corpus)
        assert np.abs(sd.audio / 32767 - wave).max() < 1e-4
        assert ("wavlm" in sd.features) == (seg.domain == "speech")  # domain-aware skipping
        for name, feats in sd.features.items():
            t = teachers[name]
            ref, flen = t.extract(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            tol = 1e-4 if name == "wavlm" else 2e-3
            for layer, x in feats.items():
                np.testing.assert_allclose(
                    x, ref[layer][0, : int(flen[0])].numpy(), atol=tol, rtol=tol
                )
    assert seen == s.segments_written


def _reference_audio(seg, corpus):
    """The segment decoded by hand: soundfile, mono, resampled with torchaudio."""
    import torchaudio

    path = corpus / seg.source.split("/", 1)[1]
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(1)
    first = int(round(seg.start * sr))
    x = x[first : None if seg.end is None else int(round(seg.end * sr))]
    if sr != 16000:
        x = torchaudio.functional.resample(
            torch.from_numpy(np.ascontiguousarray(x)), sr, 16000
        ).numpy()
    return x, sr


def test_rerun_skips_committed_shards(tiny_dir, corpus, tmp_path, monkeypatch):
    specs = _specs(tiny_dir)[:1]
    import sys

    before_interval = sys.getswitchinterval()
    a = extract(
        [str(corpus)],
        specs,
        str(tmp_path / "b"),
        _cfg(writer_kind="process", writers=2, switch_interval_ms=1),
    )
    assert sys.getswitchinterval() == before_interval  # the run's GIL switch interval is undone
    with pytest.raises(ExtractError, match="switch_interval_ms"):
        _cfg(switch_interval_ms=-1)
    assert verify_bank(str(tmp_path / "b")).ok and a.segments_written == a.segments_planned
    before = json.loads((tmp_path / "b" / "bank.json").read_text())["shards"]
    from audistill.shards.fs import BankFS

    passes, full = [], []
    real = BankFS.read_many
    monkeypatch.setattr(
        BankFS,
        "read_many",
        lambda self, rels, **kw: (passes.append(list(rels)), real(self, rels, **kw))[1],
    )
    real_all = Bank.commit_records
    monkeypatch.setattr(Bank, "commit_records", lambda self: (full.append(1), real_all(self))[1])
    b = extract([str(corpus)], specs, str(tmp_path / "b"), _cfg())
    assert a.shards_run == b.shards_skipped > 0 and b.shards_run == 0
    # the start-up sync reads commits/ once (the records of the last minutes, all of them here);
    # planning uses the synced catalog
    assert len(passes) == 1 and len(passes[0]) == a.shards_run and not full
    assert json.loads((tmp_path / "b" / "bank.json").read_text())["shards"] == before


def test_corrupt_inputs_are_recorded_and_the_run_goes_on(tiny_dir, tmp_path):
    c = tmp_path / "c" / "speech"
    write_wav(c / "good1.wav", 1.0)
    write_wav(c / "good2.wav", 1.5, seed=3)
    (c / "garbage.wav").write_bytes(b"RIFF\x00\x00 this is not audio")
    (c / "empty.flac").write_bytes(b"")
    sf.write(c / "zero.wav", np.zeros(0, np.float32), 16000)
    write_wav(c / "tiny.wav", 0.01)
    nan = np.full(16000, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(c / "nan.wav", nan, 16000, subtype="FLOAT")
    truncated = (c / "good2.wav").read_bytes()
    (c / "truncated.wav").write_bytes(truncated[:60])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "missing", "path": str(tmp_path / "gone.wav"), "domain": "speech"}) + "\n"
    )
    s = extract(
        [str(tmp_path / "c"), str(manifest)],
        _specs(tiny_dir)[:1],
        str(tmp_path / "bank"),
        _cfg(domain="speech"),
    )
    assert s.segments_written == 2
    reasons = {
        e["file"].rsplit("/", 1)[-1]: e["reason"]
        for e in map(json.loads, (tmp_path / "bank" / "errors.jsonl").open())
    }
    assert set(reasons) == {
        "garbage.wav",
        "empty.flac",
        "zero.wav",
        "tiny.wav",
        "nan.wav",
        "truncated.wav",
        "gone.wav",
    }
    assert (
        "NaN" in reasons["nan.wav"]
        and "too short" in reasons["tiny.wav"]
        and reasons["gone.wav"] == "file not found"
    )
    assert "empty" in reasons["zero.wav"]
    assert s.failed == 7 and s.failed_fraction == 7 / 9
    with pytest.raises(TooManyFailures):
        check_failures(s, 0.01)
    assert verify_bank(str(tmp_path / "bank")).ok


def test_a_wrong_manifest_duration_is_recorded_not_stored_cut(tiny_dir, tmp_path):
    write_wav(tmp_path / "a.wav", 1.0)
    write_wav(tmp_path / "b.wav", 3.0, seed=1)
    write_wav(tmp_path / "c.wav", 5.0, seed=2)
    rows = [
        {"id": "a", "path": "a.wav", "domain": "speech", "duration": 1.0},
        {"id": "b", "path": "b.wav", "domain": "speech", "duration": 1.5},  # b is really 3 s long
        {"id": "c", "path": "c.wav", "domain": "speech", "duration": 3.0},
    ]  # cut in two pieces: 2 s of tail
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = TeacherSpec(
        name="wavlm", source=str(tiny_dir("wavlm")), layers=[1], codec="float16", max_seconds=2.0
    )
    s = extract([str(tmp_path / "m.jsonl")], [spec], str(tmp_path / "bank"), _cfg(max_seconds=30.0))
    assert s.segments_written == 1 and s.failed == 3
    errs = {
        e["segment"][0]: e for e in map(json.loads, (tmp_path / "bank" / "errors.jsonl").open())
    }
    assert (
        errs["b"]["segment"].startswith("b-")
        and "the manifest says 1.5 s, the file holds 3 s" in errs["b"]["reason"]
    )
    assert "the manifest says 3 s, the file holds 5 s" in errs["c"]["reason"]
    assert [sd.segment.source for sd in BankReader(str(tmp_path / "bank"))] == ["a"]
    assert verify_bank(str(tmp_path / "bank")).ok


def test_a_file_name_that_is_not_utf8_is_extracted_under_an_escaped_source(
    tiny_dir, tmp_path, capsys, monkeypatch
):
    import os

    c = tmp_path / "c"
    write_wav(c / "ok.wav", 1.0)
    raw = write_wav(tmp_path / "x.wav", 1.2, seed=2)
    os.rename(raw, os.fsencode(c) + b"/caf\xe9.wav")  # Latin-1 bytes: not UTF-8
    spec = TeacherSpec(name="wavlm", source=str(tiny_dir("wavlm")), layers=[1], codec="float16")
    for layout in ("zarr", "webdataset"):
        s = extract([str(c)], [spec], str(tmp_path / layout), _cfg(layout=layout))
        assert s.segments_written == 2 and s.failed == 0
        assert sorted(sd.segment.source for sd in BankReader(str(tmp_path / layout))) == [
            "c/caf\\xe9.wav",
            "c/ok.wav",
        ]
        assert verify_bank(str(tmp_path / layout)).ok
    assert run_cli(monkeypatch, capsys, "manifest", str(c), "-o", str(tmp_path / "m.jsonl"))[0] == 0
    s = extract([str(tmp_path / "m.jsonl")], [spec], str(tmp_path / "from-manifest"), _cfg())
    assert {sd.segment.id for sd in BankReader(str(tmp_path / "from-manifest"))} == {
        sd.segment.id for sd in BankReader(str(tmp_path / "zarr"))
    }


class _NaNTeacher(Teacher):
    """Returns NaN for segments shorter than a second (a teacher that blows up on some inputs)."""

    def __init__(self, spec):
        super()._setup(spec, "cpu", torch.nn.Linear(1, 4), 50.0, 4, 2)

    def _native_frames(self, n):
        return max(1, n // 320)

    def _forward(self, wave, lengths):
        t = max(self._native_frames(int(n)) for n in lengths)
        x = torch.ones(wave.shape[0], t, 4)
        for b, n in enumerate(lengths):
            if n < 16000:
                x[b, 0, 0] = float("nan")
        return {k: x for k in self.layers}


def test_nan_teacher_outputs_are_recorded_never_stored(tmp_path, monkeypatch):
    import audistill.extract.run as run_mod

    write_wav(tmp_path / "c" / "short.wav", 0.5)
    write_wav(tmp_path / "c" / "long.wav", 1.5)
    monkeypatch.setattr(run_mod, "load_teacher", lambda spec, device: _NaNTeacher(spec))
    spec = TeacherSpec(name="nanny", source="test", layers="all")
    s = extract([str(tmp_path / "c")], [spec], str(tmp_path / "bank"), _cfg())
    assert s.segments_written == 2 and s.teachers["nanny"].segments == 1
    got = {
        sd.segment.source.rsplit("/", 1)[-1]: sorted(sd.features)
        for sd in BankReader(str(tmp_path / "bank"))
    }
    assert got == {"short.wav": [], "long.wav": ["nanny"]}
    (err,) = [json.loads(x) for x in (tmp_path / "bank" / "errors.jsonl").open()]
    assert "NaN" in err["reason"] and "nanny" in err["reason"]


def test_another_revision_is_refused_and_nothing_written(tiny_dir, corpus, tmp_path):
    from .tiny_models import make_tiny

    spec = _specs(tiny_dir)[0]
    extract([str(corpus)], [spec], str(tmp_path / "bank"), _cfg())
    before = (tmp_path / "bank" / "bank.json").read_bytes()
    other = make_tiny("wavlm", tmp_path / "other", seed=7)
    with pytest.raises(ExtractError, match="refusing"):
        extract(
            [str(corpus)],
            [TeacherSpec(**{**spec.__dict__, "source": str(other)})],
            str(tmp_path / "bank"),
            _cfg(shard_seconds=3.0),
        )
    assert (tmp_path / "bank" / "bank.json").read_bytes() == before


def test_dry_run_plans_without_loading_weights(tiny_dir, corpus, tmp_path, monkeypatch):
    import audistill.extract.run as run_mod

    monkeypatch.setattr(run_mod, "load_teacher", None)  # would fail if called
    plan = dry_run([str(corpus)], _specs(tiny_dir), _cfg())
    assert plan["shards"] > 1 and set(plan["hours_per_domain"]) == {"speech", "music"}
    w, h = plan["teachers"]["wavlm"], plan["teachers"]["hubert"]
    assert w["seconds"] == pytest.approx(plan["hours_per_domain"]["speech"] * 3600)
    assert h["bits_per_value"] == 16.0 and w["bits_per_value"] == 32.0 and w["layers"] == [1, 3]
    assert h["bytes"] == pytest.approx(h["frames"] * 32 * 2 * 2)
    assert not (tmp_path / "bank").exists()


def test_bank_on_an_fsspec_url(tiny_dir, corpus):
    """Nothing in extraction assumes a local bank (memory:// stands in for s3://)."""
    root = f"memory://bank-{id(corpus)}"
    s = extract([str(corpus)], _specs(tiny_dir)[:1], root, _cfg())
    assert s.segments_written == s.segments_planned and verify_bank(root).ok
    assert len(list(BankReader(root))) == s.segments_written


def test_a_new_teacher_is_added_to_committed_shards(tiny_dir, corpus, tmp_path):
    """Re-running with one more teacher (and more layers of an old one) adds fields, rewrites
    nothing."""
    wavlm, hubert = _specs(tiny_dir)
    root = str(tmp_path / "bank")
    first = extract([str(corpus)], [wavlm], root, _cfg())
    before = Bank.open(root)
    files_before = {n: before.shard_files(n) for n in before.catalog.shards}
    more = TeacherSpec(**{**wavlm.__dict__, "layers": (0, 1, 3)})
    s = extract(
        [str(corpus)], [more, hubert], root, _cfg(writer_kind="process", writers=2)
    )  # shared-memory path
    assert s.shards_run == first.shards_run and s.shards_skipped == 0 and s.failed == 0
    bank = Bank.open(root)
    assert bank.catalog.teachers["wavlm"].layers == [0, 1, 3] and "hubert" in bank.catalog.teachers
    for name, files in files_before.items():
        assert all(bank.shard_files(name)[f] == meta for f, meta in files.items())
    assert verify_bank(root).ok
    ref = str(tmp_path / "ref")
    extract([str(corpus)], [more, hubert], ref, _cfg())
    for a, b in zip(BankReader(root), BankReader(ref), strict=True):
        assert a.segment == b.segment and sorted(a.features) == sorted(b.features)
        for t in a.features:
            for layer in a.features[t]:
                np.testing.assert_array_equal(a.features[t][layer], b.features[t][layer])
    again = extract([str(corpus)], [more, hubert], root, _cfg())
    assert again.shards_run == 0 and again.shards_skipped == s.shards_run


def test_adding_a_teacher_opens_only_shards_that_lost_a_segment(
    tiny_dir, corpus, tmp_path, monkeypatch
):
    """A shard holding every planned segment holds them in plan order: planning to add a teacher to
    it needs no read of the shard (hours at 100 000 shards on an object store). A shard that lost
    a segment is opened for the ids it holds."""
    from audistill.extract.run import build_plan, load_teachers, plan_work

    nan = np.full(12000, 0.1, np.float32)
    nan[5] = np.nan
    sf.write(
        corpus / "speech" / "utt01b.wav", nan, 16000, subtype="FLOAT"
    )  # planned, fails to decode
    wavlm, hubert = _specs(tiny_dir)
    root = str(tmp_path / "bank")
    first = extract([str(corpus)], [wavlm], root, _cfg())
    assert first.failed == 1
    plan, _ = build_plan([str(corpus)], [wavlm], _cfg())
    bank = Bank.open(root)
    lossy = {sh.name for sh in plan if bank.catalog.shards[sh.name].num_segments < sh.count}
    opened = []
    real = Bank.shard_reader
    monkeypatch.setattr(
        Bank,
        "shard_reader",
        lambda self, name, *a, **k: opened.append(name) or real(self, name, *a, **k),
    )
    todo, add, skipped = plan_work(bank, plan, load_teachers([wavlm, hubert], _cfg()))
    assert len(lossy) == 1 and set(opened) == lossy and len(todo) == len(plan) and not skipped
    for sh in todo:  # what the add will run: exactly the segments each shard holds, in its order
        assert [s.id for s in sh.segments] == [s.id for s in real(bank, sh.name).segments]
    monkeypatch.undo()
    s = extract([str(corpus)], [wavlm, hubert], root, _cfg())
    assert (
        s.shards_run == first.shards_run and s.failed == 0
    )  # the lost segment is not retried by an add
    ref = str(tmp_path / "ref")
    extract([str(corpus)], [wavlm, hubert], ref, _cfg())
    for a, b in zip(BankReader(root), BankReader(ref), strict=True):
        assert a.segment == b.segment
        np.testing.assert_array_equal(a.features["hubert"][3], b.features["hubert"][3])
    assert verify_bank(root).ok


def test_pace_runs_from_the_first_commit_to_the_last():
    """Neither start-up nor the first shard's batches count: audio of shards 2..N over the time
    from commit 1 to commit N, in commit-time order (writers may finish out of plan order)."""
    from audistill.extract.run import RunSummary

    s = RunSummary("b", commits=[(114.0, 100.0), (110.0, 3600.0), (112.0, 50.0)])
    assert s.pace_sps() == pytest.approx((50.0 + 100.0) / 4.0)
    assert RunSummary("b", commits=[(1.0, 5.0), (2.0, 5.0)]).pace_sps() is None  # too few shards
    assert RunSummary("b").padding_efficiency is None
    assert RunSummary("b", padded_samples=400, real_samples=300).padding_efficiency == 0.75


def test_auto_decode_workers_and_writers_follow_the_device_and_cores(monkeypatch):
    """On CUDA the defaults scale with the cores this process may use (affinity, cgroup quota:
    not the host's count), so the loader keeps a fast GPU fed; explicit values win; the CPU
    default stays small."""
    import audistill.extract.pipeline as pipeline

    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 64)  # the host; never read for this
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = ExtractConfig(device="cuda").run_options()
    assert (gpu.loader_workers, gpu.writers) == (5, 8)
    assert ExtractConfig(device="cpu").run_options().loader_workers == 2
    assert (
        ExtractConfig(device="cuda", loader_workers=0, writers=3).run_options().loader_workers == 0
    )
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 64)
    assert ExtractConfig(device="cuda").run_options().loader_workers == 8
    monkeypatch.setattr(pipeline, "usable_cores", lambda: 8)  # 8 cores of a 64-core node
    gpu = ExtractConfig(device="cuda").run_options()
    assert (gpu.loader_workers, gpu.writers) == (2, 4)
    with pytest.raises(ExtractError, match="loader_workers"):
        ExtractConfig(loader_workers=-1)


def test_writers_are_threads_unless_asked_for_processes():
    """auto picks the kind measured faster on the GPU machine and on the CPU: threads."""
    from audistill.extract.pipeline import resolve_writer_kind

    assert (
        resolve_writer_kind("auto", "cuda")
        == resolve_writer_kind("auto", torch.device("cuda:1"))
        == "thread"
    )
    assert resolve_writer_kind("auto", "cpu") == "thread"
    assert (
        resolve_writer_kind("thread", "cuda") == "thread"
        and resolve_writer_kind("process", "cpu") == "process"
    )


def test_runs_check_shared_memory_first(tiny_dir, corpus, tmp_path, monkeypatch, caplog):
    """auto writers are threads, which pass no features through /dev/shm (docker's default is
    64 MB); process writers, or decode workers whose audio may not fit, are warned about (the need
    is an upper bound: the run may well fit)."""
    import concurrent.futures

    import audistill.extract.pipeline as pipeline
    from audistill.extract.pipeline import RunOptions, SharedNeed, _writer_pool, shared_bytes_needed

    spec = _specs(tiny_dir)[0]  # float32 parts: dim 32, 2 layers, 50 Hz
    t = load_teacher(spec)
    need = shared_bytes_needed(
        [t],
        {t.name: t.spec.make_codec()},
        5.0,
        RunOptions(writers=2, loader_workers=1, batch_seconds=8.0),
    )
    assert need.features == (2 + 2) * 5 * 50 * 2 * 4 * 32
    assert need.audio == (2 + 2) * 5 * 16000 * 2 + 1 * 4 * 8 * 16000 * 6
    assert (
        shared_bytes_needed(
            [t], {t.name: t.spec.make_codec()}, 5.0, RunOptions(loader_workers=0)
        ).audio
        == 0
    )
    monkeypatch.setattr(pipeline, "shared_bytes_free", lambda path=pipeline.SHM: 1000)
    pool, in_process = _writer_pool(
        RunOptions(writers=2), torch.device("cuda"), SharedNeed(500, 4500)
    )
    with pool:
        assert not in_process and isinstance(pool, concurrent.futures.ThreadPoolExecutor)
    assert "shared memory" not in caplog.text
    caplog.clear()
    pool, in_process = _writer_pool(RunOptions(writers=2), torch.device("cpu"), SharedNeed(5000, 0))
    with pool:
        assert not in_process and "decode workers pass audio through shared memory" in caplog.text
    caplog.clear()
    s = extract(
        [str(corpus)],
        [spec],
        str(tmp_path / "b"),
        _cfg(writer_kind="process", writers=2, loader_workers=1),
    )
    assert s.writer_kind == "process" and s.shards_run > 1  # as asked, warned about
    assert "may hold up to" in caplog.text and "--writer-kind thread" in caplog.text


def test_catalog_saves_take_at_most_a_small_share_of_the_run():
    """Every 30 s while a save is cheap; once bank.json is large, no more often than keeps saving
    under 5 % of the loop's time."""
    from audistill.shards.bank import catalog_save_due

    assert not catalog_save_due(29.0, 0.1) and catalog_save_due(30.0, 0.1)
    assert not catalog_save_due(100.0, 7.0) and catalog_save_due(140.0, 7.0)


def test_writer_processes_open_the_bank_once_until_its_catalog_changes(
    tiny_dir, corpus, tmp_path, monkeypatch
):
    """A writer process (or Dask worker) re-parses bank.json only when it changed, not per shard:
    at 10 000 shards the catalog is ~100 MB and takes ~1 s to parse."""
    import os
    import time

    import audistill.extract.pipeline as pipeline

    root = str(tmp_path / "b")
    extract([str(corpus)], _specs(tiny_dir)[:1], root, _cfg())
    opened = []
    real = Bank.open
    monkeypatch.setattr(
        Bank, "open", classmethod(lambda cls, r, so=None: (opened.append(r), real(r, so))[1])
    )
    pipeline._BANKS.clear()
    a = pipeline.open_bank_cached(root)
    assert pipeline.open_bank_cached(root) is a and len(opened) == 1
    a.save_catalog()  # bank.json rewritten (by the main process, say): the next call re-opens
    os.utime(os.path.join(root, "bank.json"), (time.time() + 5, time.time() + 5))
    b = pipeline.open_bank_cached(root)
    assert (
        b is not a and len(opened) == 2 and b.catalog.teachers.keys() == a.catalog.teachers.keys()
    )


def test_the_catalog_records_the_device_and_dtype_a_teacher_ran_in(tiny_dir):
    """A bf16 spec run on the CPU runs float32: its record says fp32 on cpu (it said bf16)."""
    spec = _specs(tiny_dir)[0]
    assert spec.dtype == "bf16"
    extra = load_teacher(spec, "cpu").record().extra
    assert (extra["dtype"], extra["device"]) == ("fp32", "cpu")


def test_dry_run_frame_rate_is_what_a_24khz_model_stores(tiny_dir, tmp_path):
    """The conv stride applies at the model's input rate: 320 at 24 kHz stores 75 Hz (the
    estimate said 50 Hz)."""
    import shutil

    from audistill.extract.estimate import estimate_bytes

    src = shutil.copytree(tiny_dir("hubert"), tmp_path / "hubert24k")
    pre = json.loads((src / "preprocessor_config.json").read_text())
    (src / "preprocessor_config.json").write_text(json.dumps({**pre, "sampling_rate": 24000}))
    spec = TeacherSpec(name="h24", source=str(src), layers=[0, 3], codec="float16")
    est = estimate_bytes(spec, {"unknown": 10.0})
    assert est["frame_rate"] == load_teacher(spec).frame_rate == 75.0 and est["frames"] == 750


def test_domain_map_names_the_input_folder_itself(tiny_dir, corpus):
    """`--domain-map speech=speech` with corpus/speech itself as the input (it was ignored)."""
    plan = dry_run([str(corpus / "speech")], _specs(tiny_dir), _cfg())
    assert set(plan["hours_per_domain"]) == {"speech"} and plan["teachers"]["wavlm"]["seconds"] > 0
    assert set(
        dry_run([str(corpus / "speech")], _specs(tiny_dir), _cfg(domain_map={}))["hours_per_domain"]
    ) == {"unknown"}


def test_an_existing_bank_keeps_its_layout(tiny_dir, corpus, tmp_path):
    """Resuming a WebDataset bank needs no layout (the layout is for new banks); only an explicit
    other layout is refused, before anything is written."""
    spec, root = _specs(tiny_dir)[1:], str(tmp_path / "bank")
    first = extract([str(corpus)], spec, root, _cfg(layout="webdataset", shard_seconds=20.0))
    again = extract([str(corpus)], spec, root, _cfg(shard_seconds=20.0))
    assert again.shards_run == 0 and again.shards_skipped == first.shards_run >= 1
    before = (tmp_path / "bank" / "bank.json").read_bytes()
    with pytest.raises(ExtractError, match="layout 'webdataset', not 'zarr'"):
        extract([str(corpus)], spec, root, _cfg(layout="zarr", shard_seconds=20.0))
    assert (tmp_path / "bank" / "bank.json").read_bytes() == before
    assert Bank.open(root).catalog.layout == "webdataset"
    from audistill.extract.run import open_bank

    assert open_bank(str(tmp_path / "new"), None).catalog.layout == "zarr"  # a new bank's default


def test_run_options_are_the_configs_own_fields():
    """One configuration: the run options a run computes with are its config's fields, resolved."""
    from dataclasses import fields

    from audistill.extract.pipeline import RunOptions

    cfg = ExtractConfig(
        batch_seconds=3.0,
        max_batch=5,
        loader_workers=1,
        min_seconds=0.2,
        storage_options={"k": 1},
        writers=3,
        writer_kind="thread",
        switch_interval_ms=1.0,
        device="cpu",
    )
    opts = cfg.run_options()
    assert type(opts) is RunOptions
    assert {f.name: getattr(opts, f.name) for f in fields(RunOptions)} == {
        "batch_seconds": 3.0,
        "max_batch": 5,
        "loader_workers": 1,
        "min_seconds": 0.2,
        "storage_options": {"k": 1},
        "writers": 3,
        "writer_kind": "thread",
        "switch_interval_ms": 1.0,
    }
    assert ExtractConfig(device="cpu").run_options() == RunOptions(loader_workers=2, writers=2)
