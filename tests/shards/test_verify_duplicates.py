"""verify names a segment stored in more than one shard: readers and training would count it
twice."""

import pytest

from audistill.shards.verify import verify_bank

from .helpers import TEACHERS, make_bank


@pytest.mark.parametrize("layout", ["zarr", "webdataset"])
def test_a_segment_stored_twice_is_named_by_verify(tmp_path, layout):
    bank, truth = make_bank(tmp_path / "b", layout)
    assert verify_bank(bank.root).ok
    seg, audio, _ = next(iter(truth.values()))
    with bank.write_shard("shard-again", [t[0] for t in TEACHERS]) as w:
        w.add(seg, audio, {t[0]: None for t in TEACHERS})
    report = verify_bank(bank.root)
    assert report.broken == {
        "shard-again": [
            f"segment {seg.id} is stored more than once (shards shard-00000, shard-again)"
        ]
    }
