import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf

from audistill.extract.corpus import plan_segments, scan_inputs
from audistill.extract.errors import CorpusError
from audistill.extract.plan import make_plan, slice_plan
from audistill.shards.segments import check_key

from .conftest import make_corpus, run_cli, write_wav


def _ids(inputs, **kw):
    segs, errs = plan_segments(
        scan_inputs(inputs, domain_map={"speech": "speech", "music": "music"}), **kw
    )
    return segs, errs


def test_ids_are_stable_across_runs_and_mount_points(tmp_path):
    a = make_corpus(tmp_path / "m1" / "corpus")
    b = tmp_path / "m2" / "corpus"
    shutil.copytree(a, b)
    sa, _ = _ids([str(a)], max_seconds=1.0)
    sb, _ = _ids([str(b)], max_seconds=1.0)
    assert (
        [s.id for s in sa]
        == [s.id for s in sb]
        == [s.id for s in _ids([str(a)], max_seconds=1.0)[0]]
    )
    assert len({s.id for s in sa}) == len(sa)
    for s in sa:
        check_key(s.id)
    assert {s.domain for s in sa} == {"speech", "music"}


def test_long_files_are_cut_and_short_tails_dropped(tmp_path):
    write_wav(tmp_path / "c" / "long.wav", 5.05)
    segs, errs = _ids([str(tmp_path / "c")], max_seconds=2.0, min_seconds=0.1)
    assert [(s.start, s.end) for s in segs] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.05)]
    assert [s.num_samples for s in segs] == [32000, 32000, 16800] and not errs
    segs, _ = _ids([str(tmp_path / "c")], max_seconds=2.5, min_seconds=0.1)
    assert [(s.start, s.end) for s in segs] == [
        (0.0, 2.5),
        (2.5, 5.0),
    ]  # the 0.05 s tail is dropped


def test_manifests_jsonl_and_csv(tmp_path):
    write_wav(tmp_path / "a.wav", 3.0)
    write_wav(tmp_path / "b.wav", 1.0, sr=8000)
    rows = [
        {
            "id": "utt-a",
            "path": "a.wav",
            "domain": "speech",
            "dataset": "d1",
            "start": 0.5,
            "end": 2.5,
        },
        {"id": "utt-b", "path": "b.wav", "domain": "sound"},
        {"id": "gone", "path": "missing.wav", "domain": "speech"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text(
        "id,path,domain,dataset,start,end\nutt-a,a.wav,speech,d1,0.5,2.5\n"
        "utt-b,b.wav,sound,,,\ngone,missing.wav,speech,,,\n"
    )
    for m in ("m.jsonl", "m.csv"):
        segs, errs = plan_segments(scan_inputs([str(tmp_path / m)]), max_seconds=30)
        assert [(s.source, s.domain, s.start, s.end, s.num_samples) for s in segs] == [
            ("utt-a", "speech", 0.5, 2.5, 32000),
            ("utt-b", "sound", 0.0, None, 16000),
        ]
        assert len(errs) == 1 and errs[0]["reason"] == "file not found"
    with pytest.raises(CorpusError):
        scan_inputs([str(tmp_path / "nope.jsonl")])


def test_webdataset_tar_input(tmp_path):
    tar = tmp_path / "audio-000.tar"
    with tarfile.open(tar, "w") as tf:
        for key, dom in (("k1", "music"), ("k2", "speech")):
            buf = io.BytesIO()
            sf.write(buf, np.zeros(8000, np.float32), 16000, format="FLAC")
            for name, data in (
                (f"{key}.flac", buf.getvalue()),
                (f"{key}.json", json.dumps({"domain": dom}).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    segs, errs = plan_segments(scan_inputs([str(tar)]))
    assert [(s.source, s.domain, s.num_samples) for s in segs] == [
        (f"{tar}#k1", "music", 8000),
        (f"{tar}#k2", "speech", 8000),
    ] and not errs


def test_slices_cover_the_plan_exactly_once(tmp_path):
    segs, _ = _ids([str(make_corpus(tmp_path / "c", 12, 4))], max_seconds=1.0)
    plan = make_plan(segs, shard_seconds=3.0)
    assert len(plan) > 4 and plan == make_plan(segs, shard_seconds=3.0)
    for n in (1, 2, 3, 7):
        names = [sh.name for i in range(n) for sh in slice_plan(plan, n, i)]
        assert sorted(names) == sorted(sh.name for sh in plan)
    ids = [s.id for sh in plan for s in sh.segments]
    assert ids == [s.id for s in segs]
    assert all(sh.seconds <= 3.0 or len(sh.segments) == 1 for sh in plan)


def test_formats_rates_and_channels_decode_to_16k_mono(tmp_path):
    from audistill.extract.audio import load_segment

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((44100, 2)) * 0.1).astype(np.float32)
    for name, kw in (
        ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}),
        ("a.mp3", {"format": "MP3"}),
        ("a.flac", {}),
        ("a.wav", {"subtype": "PCM_24"}),
    ):
        sf.write(tmp_path / name, x, 44100, **kw)
        y = load_segment(str(tmp_path / name), None, 0.25, 0.75, 100)
        assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 8000, name


def _tar_of(path, names_seconds):
    with tarfile.open(path, "w") as tf:
        for name, seconds in names_seconds:
            buf = io.BytesIO()
            sf.write(buf, np.zeros(int(seconds * 16000), np.float32), 16000, format="FLAC")
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def _manifest_cli(args, capsys, monkeypatch):
    return run_cli(monkeypatch, capsys, "manifest", *args)


def test_a_written_manifest_plans_the_same_shards_without_opening_a_file(
    tmp_path, capsys, monkeypatch
):
    import audistill.extract.corpus as corpus_mod

    root = make_corpus(tmp_path / "corpus")
    write_wav(root / "speech" / "long.wav", 7.3, sr=44100)  # cut into pieces
    (root / "speech" / "broken.wav").write_bytes(b"RIFF not audio")
    tar = _tar_of(tmp_path / "audio-000.tar", [("a.flac", 1.25), ("b.flac", 0.5)])
    inputs = [str(root), str(tar)]
    want_segs, want_errs = _ids(inputs, max_seconds=2.0)
    out = (
        tmp_path / "lists" / "corpus.jsonl"
    )  # beside the corpus, not above it: its paths start with ../
    code, _, err = _manifest_cli([*inputs, "-o", str(out)], capsys, monkeypatch)
    assert code == 2 and "--allow-outside-root" in err and not out.exists()
    code, stdout, _ = _manifest_cli(
        [
            *inputs,
            "-o",
            str(out),
            "--domain-map",
            "speech=speech",
            "--domain-map",
            "music=music",
            "--json",
            "--allow-outside-root",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0
    result = json.loads(stdout)
    assert result["items"] == 9 + 2 + 2 and result["unreadable"] == 1
    assert result["errors"][0]["file"].endswith("broken.wav")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        sum("duration" in r for r in rows) == len(rows) - 1
    )  # the unreadable file stays, without a duration

    opened = []
    real_info = corpus_mod.audio_info
    monkeypatch.setattr(
        corpus_mod, "audio_info", lambda *a, **k: opened.append(a[0]) or real_info(*a, **k)
    )
    with pytest.raises(CorpusError, match="outside the manifest's folder"):
        scan_inputs([str(out)])
    got_segs, got_errs = plan_segments(
        scan_inputs([str(out)], allow_outside_root=True), max_seconds=2.0
    )
    assert [o.rsplit("/", 1)[-1] for o in opened] == [
        "broken.wav"
    ]  # only the file without a duration
    assert [(s.id, s.num_samples, s.start, s.end, s.domain, s.member) for s in got_segs] == [
        (s.id, s.num_samples, s.start, s.end, s.domain, s.member) for s in want_segs
    ]
    assert [sh.name for sh in make_plan(got_segs, 3.0)] == [
        sh.name for sh in make_plan(want_segs, 3.0)
    ]
    assert [(e["segment"], e["reason"]) for e in got_errs] == [
        (e["segment"], e["reason"]) for e in want_errs
    ]
    assert any(
        s.end == 7.3 for s in got_segs
    )  # the 44.1 kHz file's last piece ends exactly where probing said

    moved = (
        tmp_path / "elsewhere"
    )  # the manifest's paths are relative to it: corpus and manifest move together
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("elsewhere"))
    moved_segs, _ = plan_segments(
        scan_inputs([str(moved / "lists" / "corpus.jsonl")], allow_outside_root=True),
        max_seconds=2.0,
    )
    assert [s.id for s in moved_segs] == [s.id for s in want_segs]
    assert all(s.path.startswith(str(moved)) for s in moved_segs)

    code, _, err = _manifest_cli([str(root), "-o", str(tmp_path / "m.csv")], capsys, monkeypatch)
    assert code == 2 and ".jsonl" in err and not (tmp_path / "m.csv").exists()


def test_slow_storage_is_probed_by_threads_with_the_same_result(tmp_path, monkeypatch):
    import threading

    import audistill.extract.corpus as corpus_mod

    root = make_corpus(tmp_path / "c", 20, 6)
    (root / "speech" / "zz-broken.wav").write_bytes(b"junk")
    items = scan_inputs([str(root)])
    seq = plan_segments(items, max_seconds=1.0, probe_workers=1)
    threads = set()
    real_info = corpus_mod.audio_info

    def recording(*a, **k):
        threads.add(threading.current_thread().name)
        return real_info(*a, **k)

    monkeypatch.setattr(corpus_mod, "audio_info", recording)
    monkeypatch.setattr(corpus_mod, "LATENCY_BOUND_S", 0.0)  # every store counts as slow
    par = plan_segments(items, max_seconds=1.0, probe_workers=2)
    assert any(t.startswith("audistill-probe") for t in threads)
    assert [s.id for s in par[0]] == [s.id for s in seq[0]] and par[0] == seq[0]
    assert [e["reason"] for e in par[1]] == [e["reason"] for e in seq[1]] and len(seq[1]) == 1
    threads.clear()
    monkeypatch.setattr(corpus_mod, "LATENCY_BOUND_S", 10.0)  # a fast disk: no threads
    assert plan_segments(items, max_seconds=1.0, probe_workers=2)[0] == seq[0]
    assert threads == {threading.current_thread().name}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"duration": "long"}, "duration 'long' is not a number"),
        ({"duration": -1}, "must be a finite number"),
        ({"duration": 0}, "duration 0"),
        ({"start": 2, "end": 1}, "end 1.0 is not after start 2.0"),
        ({"end": "nan"}, "must be a finite number"),
    ],
)
def test_bad_manifest_numbers_are_refused_naming_the_row(tmp_path, row, message):
    m = tmp_path / "m.jsonl"
    m.write_text(
        json.dumps({"id": "ok", "path": "a.wav"})
        + "\n"
        + json.dumps({"id": "x", "path": "a.wav", **row})
        + "\n"
    )
    with pytest.raises(CorpusError, match="row 2") as e:
        scan_inputs([str(m)])
    assert message in str(e.value)


def test_audio_longer_than_the_window_is_refused_without_decoding_it_all(tmp_path):
    from audistill.extract.audio import load_segment
    from audistill.extract.errors import AudioError

    p = write_wav(tmp_path / "a.wav", 5.0, sr=22050)
    assert (
        len(load_segment(str(p), None, 0.0, None, 100, max_samples=80000)) == 80000
    )  # exactly the window
    with pytest.raises(AudioError, match="longer than the teachers' 2 s window"):
        load_segment(str(p), None, 0.0, None, 100, max_samples=32000)
    assert len(load_segment(str(p), None, 1.0, 3.0, 100, max_samples=32000)) == 32000


def test_folders_are_walked_in_sorted_rglob_order_without_listing_them_first(tmp_path):
    from audistill.extract.corpus import _walk_sorted

    root = tmp_path / "c"
    names = [
        "a.wav",
        "a/x.wav",
        "a-b/y.wav",
        "a b.wav",
        "A/z.wav",
        "a/b/c/d.wav",
        "a.d/e.wav",
        "b/a.wav",
        "ab.wav",
        "a/.hidden.wav",
        "Z.wav",
        "é/ü.wav",
        "a0/1.wav",
    ]
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"x")
    (root / "link").symlink_to(
        root / "b", target_is_directory=True
    )  # rglob does not walk into linked folders
    (root / "linked.wav").symlink_to(root / "ab.wav")  # but lists linked files
    want = [str(p) for p in sorted(root.rglob("*")) if p.is_file()]
    assert (
        list(_walk_sorted(str(root))) == [(p, None) for p in want] and len(want) == len(names) + 1
    )


def test_shards_are_stored_packed_and_give_back_the_same_segments(tmp_path):
    import pickle

    from audistill.extract.corpus import Item, split_item

    odd = Item(
        source="c/spk\udce9/ünï code.wav",
        path="/x/spk\udce9/ünï code.wav",
        domain="speech",
        dataset="d",
    )
    segs = split_item(odd, 100.0, 30.0, 0.1) + split_item(
        Item("t#k", "t.tar", "k.flac", "music"), 2.5, 30.0, 0.1
    )
    plan = make_plan(segs, shard_seconds=60.0)
    assert [len(sh.segments) for sh in plan] == [sh.count for sh in plan] == [2, 3]
    assert [
        s for sh in plan for s in sh.segments
    ] == segs  # strings (lone surrogates too), floats, None, ints
    assert plan[0].seconds == 60.0 and plan[1].seconds == 42.5
    again = make_plan(list(segs), shard_seconds=60.0)
    assert again == plan and pickle.loads(pickle.dumps(plan[0])) == plan[0]
    assert len(pickle.dumps(plan[0])) < 400  # what a writer process or Dask worker is sent


def test_nemo_manifests_read_as_they_are(tmp_path):
    write_wav(tmp_path / "a.wav", 4.0)
    write_wav(tmp_path / "b.wav", 1.5)
    rows = [
        {"audio_filepath": "a.wav", "offset": 0.5, "duration": 2.0, "text": "hi"},
        {"audio_filepath": str(tmp_path / "b.wav"), "duration": 1.5, "text": "yo"},
    ]
    (tmp_path / "nemo.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    segs, errs = plan_segments(
        scan_inputs([str(tmp_path / "nemo.json")]), max_seconds=30
    )  # NeMo's name for JSONL
    assert [(s.source, s.start, s.end, s.num_samples) for s in segs] == [
        ("a.wav", 0.5, 2.5, 32000),
        (str(tmp_path / "b.wav"), 0.0, None, 24000),
    ] and not errs


def test_a_manifest_line_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / "m.json").write_text('[{"path": "a.wav"}]\n')
    with pytest.raises(CorpusError, match="line 1 is not a JSON object"):
        scan_inputs([str(tmp_path / "m.json")])


def test_decode_workers_read_tar_members_at_their_offsets(tmp_path, monkeypatch):
    import gzip

    import audistill.extract.audio as audio
    from audistill.extract.audio import forget_tars, load_segment, read_member
    from audistill.extract.errors import AudioError

    tar = _tar_of(tmp_path / "a.tar", [("x.flac", 1.0), ("y.flac", 0.5)])
    with tarfile.open(tar) as tf:
        want = {m: tf.extractfile(m).read() for m in ("x.flac", "y.flac")}
    forget_tars()
    monkeypatch.setattr(audio, "tar_members", lambda *a, **k: pytest.fail("whole tar read"))
    assert (
        read_member(str(tar), "y.flac") == want["y.flac"]
        and read_member(str(tar), "x.flac") == want["x.flac"]
    )
    assert len(load_segment(str(tar), "x.flac", 0.0, None, 100)) == 16000
    with pytest.raises(AudioError, match="member z.flac missing"):
        read_member(str(tar), "z.flac")
    monkeypatch.undo()
    gz = tmp_path / "a.tar.gz"
    gz.write_bytes(
        gzip.compress(tar.read_bytes())
    )  # compressed: no seeking, the members are cached whole
    assert read_member(str(gz), "x.flac") == want["x.flac"]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[: 512 + len(want["x.flac"]) // 2])  # x's data ends early
    with pytest.raises(
        AudioError, match="cut.tar"
    ):  # a segment error the loader records, not a crash
        read_member(str(cut), "x.flac")


def test_an_unreadable_tar_input_is_recorded_and_planning_goes_on(tmp_path):
    good = make_corpus(tmp_path / "c", 2, 1)
    tar = _tar_of(tmp_path / "a.tar", [("x.flac", 1.0)])
    (tmp_path / "cut.tar").write_bytes(tar.read_bytes()[:600])  # x.flac's data ends early
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    segs, errs = plan_segments(
        scan_inputs([str(good), str(tmp_path / "cut.tar"), str(tmp_path / "junk.tar")])
    )
    assert len(segs) == 3 and len(errs) == 2
    assert (
        errs[0]["file"] == str(tmp_path / "cut.tar")
        and "truncated: the tar ends in or after member x.flac" in errs[0]["reason"]
    )
    assert errs[1]["file"] == str(tmp_path / "junk.tar") and "unreadable tar" in errs[1]["reason"]
