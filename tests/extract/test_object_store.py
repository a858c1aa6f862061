"""Extraction straight into a bank on object storage (a real S3-compatible server, moto, on
loopback), with thread and process writers, resumed after an interruption, equal to a local run."""

import tarfile

import pytest

from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .conftest import run_cli

pytestmark = pytest.mark.s3


def _content(root, opts=None):
    return {
        sd.segment.id: (
            sd.audio.tobytes(),
            {t: {k: v.tobytes() for k, v in f.items()} for t, f in sd.features.items()},
        )
        for sd in BankReader(root, storage_options=opts)
    }


@pytest.mark.parametrize(("layout", "writer_kind"), [("zarr", "thread"), ("webdataset", "process")])
def test_extract_into_s3_equals_local(tiny_dir, corpus, tmp_path, s3_bucket, layout, writer_kind):
    prefix, opts = s3_bucket
    spec = TeacherSpec(
        name="wavlm", source=str(tiny_dir("wavlm")), layers=[1, 3], codec="int8-delta"
    )
    base = dict(
        max_seconds=2.0, shard_seconds=5.0, loader_workers=0, batch_seconds=8.0, layout=layout
    )
    local = extract([str(corpus)], [spec], str(tmp_path / "local"), ExtractConfig(**base))
    root = f"{prefix}/bank"
    # a first run that stops after the first shard (a slice of 3), then the full run resumes it
    first = extract(
        [str(corpus)],
        [spec],
        root,
        ExtractConfig(**base, storage_options=opts, num_workers=3, worker_index=0),
    )
    s = extract(
        [str(corpus)],
        [spec],
        root,
        ExtractConfig(**base, storage_options=opts, writer_kind=writer_kind, writers=2),
    )
    assert first.shards_run > 0 and s.shards_skipped == first.shards_run
    assert s.shards_run + s.shards_skipped == local.shards_run and s.failed == 0
    assert verify_bank(root, storage_options=opts).ok
    assert Bank.open(root, opts).catalog.num_segments == local.segments_written
    assert _content(root, opts) == _content(str(tmp_path / "local"))


def test_cli_takes_storage_options_as_json_or_a_file(
    tiny_dir, corpus, tmp_path, s3_bucket, monkeypatch, capsys
):
    import json

    import s3fs

    prefix, opts = s3_bucket
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the server is reachable only through --storage-options
    s3fs.S3FileSystem.clear_instance_cache()
    spec = tmp_path / "t.toml"
    spec.write_text(
        f'[[teacher]]\nname = "wavlm"\nsource = "{tiny_dir("wavlm")}"\nlayers = [1]\ncodec = '
        '"float16"\n'
    )
    (tmp_path / "so.json").write_text(json.dumps(opts))

    def run(*args):
        return run_cli(
            monkeypatch,
            capsys,
            "extract",
            str(corpus),
            "--teachers",
            str(spec),
            "--json",
            "--loader-workers",
            "0",
            "--max-seconds",
            "2",
            *args,
        )

    code, out, err = run("--bank", f"{prefix}/a", "--storage-options", f"@{tmp_path / 'so.json'}")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["segments_written"] > 0 and summary["failed"] == 0
    assert verify_bank(f"{prefix}/a", storage_options=opts).ok
    code, out, err = run("--bank", f"{prefix}/b", "--storage-options", json.dumps(opts))
    assert code == 0 and _content(f"{prefix}/b", opts) == _content(f"{prefix}/a", opts)
    for bad, says in (
        ("[1, 2]", "must be a JSON object"),
        ("{key:", "is not JSON"),
        ("@/no/such.json", "cannot read"),
    ):
        code, _, err = run("--bank", str(tmp_path / "local"), "--storage-options", bad)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "local").exists()


def test_a_plan_file_on_the_object_store_is_read_by_ranges(corpus, s3_bucket, monkeypatch):
    import fsspec

    from audistill.extract.planfile import PlanFile
    from audistill.extract.run import build_plan, plan_to_file

    prefix, opts = s3_bucket
    cfg = ExtractConfig(max_seconds=1.0, shard_seconds=3.0, storage_options=opts)
    spec = TeacherSpec(name="w", source="/unused")
    plan_to_file([str(corpus)], [spec], cfg, f"{prefix}/plans/c.plan")
    want, _ = build_plan([str(corpus)], [spec], ExtractConfig(max_seconds=1.0, shard_seconds=3.0))
    ranges = []
    fs = fsspec.core.url_to_fs(f"{prefix}/plans/c.plan", **opts)[
        0
    ]  # the cached instance PlanFile gets too
    real = fs.cat_ranges
    monkeypatch.setattr(
        fs,
        "cat_ranges",
        lambda paths, starts, ends, **kw: (
            ranges.extend(zip(starts, ends, strict=True)) or real(paths, starts, ends, **kw)
        ),
    )
    pf = PlanFile(f"{prefix}/plans/c.plan", opts)
    assert list(pf[1::2]) == list(want[1::2]) and len(ranges) == len(want[1::2]) > 1
    assert sum(b - a for a, b in ranges) == sum(
        len(sh.packed) for sh in want[1::2]
    )  # only those shards' bytes


def test_audio_tars_on_the_object_store_plan_and_read_by_member(s3_bucket, tmp_path):
    import fsspec

    from audistill.extract.audio import forget_tars, load_segment, read_member
    from audistill.extract.corpus import plan_segments, scan_inputs

    from .test_corpus import _tar_of

    prefix, opts = s3_bucket
    tar = _tar_of(tmp_path / "a.tar", [("k1.flac", 1.0), ("k2.flac", 0.5)])
    url = f"{prefix}/audio/a.tar"
    fs, path = fsspec.core.url_to_fs(url, **opts)
    fs.put_file(str(tar), path)
    segs, errs = plan_segments(scan_inputs([url], storage_options=opts), storage_options=opts)
    assert [(s.member, s.num_samples) for s in segs] == [
        ("k1.flac", 16000),
        ("k2.flac", 8000),
    ] and not errs
    forget_tars()  # as in a decode worker: no whole tar in memory, members by ranged reads
    with tarfile.open(tar) as tf:
        assert read_member(url, "k2.flac", opts) == tf.extractfile("k2.flac").read()
    assert len(load_segment(url, "k1.flac", 0.0, None, 100, opts)) == 16000
