"""Dask LocalCluster and --num-workers/--worker-index slices give the same bank as one process."""

import pytest

from audistill.extract.dask_run import extract_dask
from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank


def _cfg(**kw):
    return ExtractConfig(max_seconds=1.5, shard_seconds=4.0, loader_workers=0, batch_seconds=6.0,
                         domain_map={"speech": "speech", "music": "music"}, **kw)


def _content(root):
    return {sd.segment.id: (sd.shard, sd.audio.tobytes(),
                            {t: {k: v.tobytes() for k, v in f.items()} for t, f in sd.features.items()})
            for sd in BankReader(root)}


@pytest.fixture
def specs(tiny_dir):
    return [TeacherSpec(name="wavlm", source=str(tiny_dir("wavlm")), layers=[1, 3], domains=("speech",)),
            TeacherSpec(name="w2v", source=str(tiny_dir("wav2vec2")), layers="sparse:1", codec="bfloat16")]


def test_dask_local_cluster_equals_single_process(specs, corpus, tmp_path):
    single = extract([str(corpus)], specs, str(tmp_path / "one"), _cfg())
    dist = extract_dask([str(corpus)], specs, str(tmp_path / "dask"), _cfg(), workers=2)
    assert dist.shards_run == single.shards_run > 2 and dist.failed == 0
    assert verify_bank(str(tmp_path / "dask")).ok
    assert _content(str(tmp_path / "dask")) == _content(str(tmp_path / "one"))
    a, b = Bank.open(str(tmp_path / "one")).catalog, Bank.open(str(tmp_path / "dask")).catalog
    assert a.teachers == b.teachers and set(a.shards) == set(b.shards)
    again = extract_dask([str(corpus)], specs, str(tmp_path / "dask"), _cfg(), workers=2)
    assert again.shards_run == 0 and again.shards_skipped == single.shards_run


def test_slices_cover_the_corpus_exactly_once(specs, corpus, tmp_path):
    single = extract([str(corpus)], specs, str(tmp_path / "one"), _cfg())
    for i in range(3):
        extract([str(corpus)], specs, str(tmp_path / "sl"), _cfg(num_workers=3, worker_index=i))
    bank = Bank.open(str(tmp_path / "sl"))
    assert set(bank.sync_catalog()) == set(Bank.open(str(tmp_path / "one")).catalog.shards)
    assert verify_bank(str(tmp_path / "sl")).ok
    assert _content(str(tmp_path / "sl")) == _content(str(tmp_path / "one"))
    assert bank.catalog.num_segments == single.segments_written
