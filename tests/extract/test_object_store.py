"""Extraction straight into a bank on object storage (a real S3-compatible server, moto, on
loopback), with thread and process writers, resumed after an interruption, equal to a local run."""

import pytest

from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

pytestmark = pytest.mark.s3


def _content(root, opts=None):
    return {sd.segment.id: (sd.audio.tobytes(), {t: {k: v.tobytes() for k, v in f.items()} for t, f in sd.features.items()})
            for sd in BankReader(root, storage_options=opts)}


@pytest.mark.parametrize(("layout", "writer_kind"), [("zarr", "thread"), ("webdataset", "process")])
def test_extract_into_s3_equals_local(tiny_dir, corpus, tmp_path, s3_bucket, layout, writer_kind):
    prefix, opts = s3_bucket
    spec = TeacherSpec(name="wavlm", source=str(tiny_dir("wavlm")), layers=[1, 3], codec="int8-delta")
    base = dict(max_seconds=2.0, shard_seconds=5.0, loader_workers=0, batch_seconds=8.0, layout=layout)
    local = extract([str(corpus)], [spec], str(tmp_path / "local"), ExtractConfig(**base))
    root = f"{prefix}/bank"
    # a first run that stops after the first shard (a slice of 3), then the full run resumes it
    first = extract([str(corpus)], [spec], root, ExtractConfig(**base, storage_options=opts, num_workers=3,
                                                              worker_index=0))
    s = extract([str(corpus)], [spec], root, ExtractConfig(**base, storage_options=opts, writer_kind=writer_kind,
                                                          writers=2))
    assert first.shards_run > 0 and s.shards_skipped == first.shards_run
    assert s.shards_run + s.shards_skipped == local.shards_run and s.failed == 0
    assert verify_bank(root, storage_options=opts).ok
    assert Bank.open(root, opts).catalog.num_segments == local.segments_written
    assert _content(root, opts) == _content(str(tmp_path / "local"))
