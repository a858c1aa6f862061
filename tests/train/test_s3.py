"""Training reads a bank on an object store (a local S3-compatible server), with loader workers."""

import pytest

from audistill.tools.bench.synth import write_bank
from audistill.train.config import from_dict
from audistill.train.loop import train

from .conftest import make_teachers, tiny_config


@pytest.mark.s3
def test_train_from_s3_bank(s3_bucket, tmp_path):
    prefix, opts = s3_bucket
    root = f"{prefix}/bank"
    write_bank(
        root,
        make_teachers(),
        num_shards=2,
        segments_per_shard=3,
        seconds=(1.2, 2.0),
        storage_options=opts,
    )
    raw = tiny_config(
        root,
        str(tmp_path / "runs"),
        **{"optim.max_steps": 2, "optim.warmup_steps": 0, "data.num_workers": 1},
    )
    raw["bank"]["storage_options"] = opts
    out = train(from_dict(raw))
    assert len(out["losses"]) == 2 and all(x > 0 for x in out["losses"])
