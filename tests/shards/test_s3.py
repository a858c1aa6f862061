"""Banks on object storage: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

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
