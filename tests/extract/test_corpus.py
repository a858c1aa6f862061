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

from .conftest import make_corpus, write_wav


def _ids(inputs, **kw):
    segs, errs = plan_segments(scan_inputs(inputs, domain_map={"speech": "speech", "music": "music"}), **kw)
    return segs, errs


def test_ids_are_stable_across_runs_and_mount_points(tmp_path):
    a = make_corpus(tmp_path / "m1" / "corpus")
    b = tmp_path / "m2" / "corpus"
    shutil.copytree(a, b)
    sa, _ = _ids([str(a)], max_seconds=1.0)
    sb, _ = _ids([str(b)], max_seconds=1.0)
    assert [s.id for s in sa] == [s.id for s in sb] == [s.id for s in _ids([str(a)], max_seconds=1.0)[0]]
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
    assert [(s.start, s.end) for s in segs] == [(0.0, 2.5), (2.5, 5.0)]  # the 0.05 s tail is dropped


def test_manifests_jsonl_and_csv(tmp_path):
    write_wav(tmp_path / "a.wav", 3.0)
    write_wav(tmp_path / "b.wav", 1.0, sr=8000)
    rows = [{"id": "utt-a", "path": "a.wav", "domain": "speech", "dataset": "d1", "start": 0.5, "end": 2.5},
            {"id": "utt-b", "path": "b.wav", "domain": "sound"},
            {"id": "gone", "path": "missing.wav", "domain": "speech"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "m.csv").write_text("id,path,domain,dataset,start,end\nutt-a,a.wav,speech,d1,0.5,2.5\n"
                                    "utt-b,b.wav,sound,,,\ngone,missing.wav,speech,,,\n")
    for m in ("m.jsonl", "m.csv"):
        segs, errs = plan_segments(scan_inputs([str(tmp_path / m)]), max_seconds=30)
        assert [(s.source, s.domain, s.start, s.end, s.num_samples) for s in segs] == [
            ("utt-a", "speech", 0.5, 2.5, 32000), ("utt-b", "sound", 0.0, None, 16000)]
        assert len(errs) == 1 and errs[0]["reason"] == "file not found"
    with pytest.raises(CorpusError):
        scan_inputs([str(tmp_path / "nope.jsonl")])


def test_webdataset_tar_input(tmp_path):
    tar = tmp_path / "audio-000.tar"
    with tarfile.open(tar, "w") as tf:
        for key, dom in (("k1", "music"), ("k2", "speech")):
            buf = io.BytesIO()
            sf.write(buf, np.zeros(8000, np.float32), 16000, format="FLAC")
            for name, data in ((f"{key}.flac", buf.getvalue()), (f"{key}.json", json.dumps({"domain": dom}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    segs, errs = plan_segments(scan_inputs([str(tar)]))
    assert [(s.source, s.domain, s.num_samples) for s in segs] == [
        (f"{tar}#k1", "music", 8000), (f"{tar}#k2", "speech", 8000)] and not errs


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
    for name, kw in (("a.ogg", {"format": "OGG", "subtype": "VORBIS"}), ("a.mp3", {"format": "MP3"}),
                     ("a.flac", {}), ("a.wav", {"subtype": "PCM_24"})):
        sf.write(tmp_path / name, x, 44100, **kw)
        y = load_segment(str(tmp_path / name), None, 0.25, 0.75, 100)
        assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 8000, name
