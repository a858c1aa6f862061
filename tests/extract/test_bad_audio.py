"""Audio that lies about itself: truncated files and tars, wrong declared lengths, loud floats, bad
rates. Each is an error record naming the file (or kept whole), never stored cut or silently."""

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf

from audistill.extract.audio import forget_tars, load_segment, to_int16
from audistill.extract.corpus import plan_segments, scan_inputs
from audistill.extract.errors import AudioError

from .conftest import write_wav


def _wav_bytes(seconds: float, seed: int) -> bytes:
    buf = io.BytesIO()
    x = (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    sf.write(buf, x, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_a_truncated_wav_is_an_error_naming_what_its_header_says(tmp_path):
    whole = _wav_bytes(3.0, 0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cut.wav").write_bytes(whole[: 44 + 32000])  # header says 3 s, file holds 1 s
    write_wav(tmp_path / "c" / "ok.wav", 1.0)
    segs, errs = plan_segments(scan_inputs([str(tmp_path / "c")]), max_seconds=10.0)
    assert [s.source for s in segs] == ["c/ok.wav"]
    (err,) = errs
    assert (
        err["file"].endswith("cut.wav")
        and err["reason"] == "truncated: header says 48000 frames, file holds 16000"
    )
    with pytest.raises(
        AudioError, match="truncated: header says 48000 frames"
    ):  # at decode too (manifests)
        load_segment(str(tmp_path / "c" / "cut.wav"), None, 0.0, None, 100)


def test_a_wav_streamed_without_a_length_is_not_called_truncated(tmp_path):
    data = bytearray(_wav_bytes(1.0, 0))
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # a streaming writer's "length unknown"
    (tmp_path / "s.wav").write_bytes(bytes(data))
    assert len(load_segment(str(tmp_path / "s.wav"), None, 0.0, None, 100)) == 16000


@pytest.mark.parametrize("rate", [1, 999, 400_000])
def test_an_implausible_sample_rate_is_refused_naming_the_file(tmp_path, rate):
    data = bytearray(_wav_bytes(1.0, 0))
    data[24:28] = rate.to_bytes(4, "little")
    data[28:32] = (2 * rate).to_bytes(4, "little")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "odd.wav").write_bytes(bytes(data))
    segs, errs = plan_segments(scan_inputs([str(tmp_path / "c")]))
    assert (
        segs == []
        and errs[0]["file"].endswith("odd.wav")
        and f"implausible sample rate {rate} Hz" in errs[0]["reason"]
    )


def _tar(path, n: int, compress: bool = False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(n):
            data = _wav_bytes(0.5, i)
            info = tarfile.TarInfo(f"k{i:02d}.wav")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return raw


def _member_ends(raw: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return [m.offset_data + m.size for m in tf.getmembers()]


@pytest.mark.parametrize("where", ["in data", "in a header", "at a header"])
@pytest.mark.parametrize("compress", [False, True])
def test_a_truncated_tar_keeps_the_members_before_the_cut_and_records_the_cut(
    tmp_path, where, compress
):
    """tarfile takes a cut inside or at a header for the end of the archive: no end block says
    otherwise."""
    name = "a.tar.gz" if compress else "a.tar"
    raw = _tar(tmp_path / "whole", 10)
    ends = _member_ends(raw)
    # member 5's data ends at ends[5]; its padded block is followed by member 6's header
    header6 = -(-ends[5] // 512) * 512
    cut = {"in data": ends[5] - 100, "in a header": header6 + 200, "at a header": header6}[where]
    kept = 5 if where == "in data" else 6
    part = raw[:cut]
    (tmp_path / name).write_bytes(
        gzip.compress(part)[:-8] if compress else part
    )  # a gzip cut short: no trailer
    forget_tars()
    segs, errs = plan_segments(scan_inputs([str(tmp_path / name)]))
    assert [s.source.rsplit("#", 1)[1] for s in segs] == [f"k{i:02d}" for i in range(kept)]
    (err,) = errs
    assert err["file"] == str(tmp_path / name) and err["reason"].startswith(
        "truncated: the tar ends"
    )
    for s in segs:  # the kept members decode
        assert len(load_segment(s.path, s.member, s.start, s.end, 100)) == 8000


def test_a_complete_tar_has_no_cut(tmp_path):
    for compress in (False, True):
        _tar(tmp_path / "a.tar", 3, compress)
        forget_tars()
        segs, errs = plan_segments(scan_inputs([str(tmp_path / "a.tar")]))
        assert len(segs) == 3 and errs == []


def test_a_declared_duration_that_is_not_the_files_is_an_error_not_a_lost_tail(tmp_path):
    write_wav(tmp_path / "long.wav", 2.5)
    write_wav(tmp_path / "ok.wav", 2.5, seed=1)
    rows = [
        {"id": "long", "path": "long.wav", "duration": 1.5},
        {"id": "ok", "path": "ok.wav", "duration": 2.5},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    segs, errs = plan_segments(scan_inputs([str(tmp_path / "m.jsonl")]), max_seconds=1.0)
    assert not errs and [s.source for s in segs] == ["long", "long", "ok", "ok", "ok"]
    for s in segs:
        if s.source == "long":
            with pytest.raises(AudioError, match="the manifest says 1.5 s, the file holds 2.5 s"):
                load_segment(s.path, s.member, s.start, s.end, 100, declared=s.declared)
        else:
            assert len(load_segment(s.path, s.member, s.start, s.end, 100, declared=s.declared)) > 0


def test_float_audio_beyond_full_scale_is_clipped_before_the_teachers_see_it(tmp_path):
    x = np.sin(np.arange(16000) / 5).astype(np.float32) * 4.0  # 4x full scale
    sf.write(tmp_path / "loud.wav", x, 16000, subtype="FLOAT")
    y = load_segment(str(tmp_path / "loud.wav"), None, 0.0, None, 100)
    assert np.abs(y).max() == 1.0
    np.testing.assert_allclose(
        to_int16(y) / 32767, y, atol=1 / 32767
    )  # what is stored is what was computed on


def test_a_shard_packed_before_declared_durations_reads_back_without_one():
    import zlib

    from audistill.extract.plan import ShardPlan

    row = [
        "a-000000000-0",
        "a",
        "a.wav",
        None,
        0.0,
        None,
        "speech",
        "",
        16000,
    ]  # a plan file's row before
    old = ShardPlan("shard-000000-x", zlib.compress(json.dumps([row]).encode()), 1, 16000)
    (seg,) = old.segments
    assert seg.declared is None and seg.num_samples == 16000
