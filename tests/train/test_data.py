import functools
import itertools

import pytest
import torch

from audistill.shards.segments import Segment
from audistill.train.data import (
    BankBatches,
    LoaderSpec,
    epoch_items,
    global_batches,
    make_loader,
    plan,
)


def segs(counts, n=40000):
    return {
        f"s{k}": [
            Segment(f"id{k}_{i}", "x", num_samples=n + 320 * i, domain="speech") for i in range(c)
        ]
        for k, c in enumerate(counts)
    }


def spec(**kw):
    base = dict(
        root="unused",
        teachers={},
        shards=(),
        crop_samples=16000,
        align_hop=640,
        batch_seconds=3.0,
        shuffle_buffer=5,
        seed=3,
    )
    return LoaderSpec(**{**base, **kw})


@pytest.mark.parametrize("world,accum", [(1, 1), (2, 1), (3, 2)])
def test_every_segment_once_per_epoch_across_ranks(world, accum):
    s = segs([7, 3, 5, 1, 4])  # shard counts that do not divide by the world size
    seen = []
    for rank in range(world):
        mbs = plan(spec(rank=rank, world=world, accum=accum), 0, s)
        assert len(mbs) % accum == 0
        for items, total in mbs:
            assert len(items) >= 1 and total >= world * accum
            seen += [(it.shard, it.index) for it in items]
    want = sorted((k, i) for k, v in s.items() for i in range(len(v)))
    assert sorted(seen) == want
    # every rank takes the same number of steps
    assert len({len(plan(spec(rank=r, world=world, accum=accum), 0, s)) for r in range(world)}) == 1


def test_plan_is_seeded_per_epoch():
    s = segs([6, 6])
    a0, a0b, a1 = (epoch_items(s, 16000, 640, 3, e, 4) for e in (0, 0, 1))
    assert a0 == a0b and [(x.shard, x.index) for x in a0] != [(x.shard, x.index) for x in a1]


def test_batches_by_seconds():
    items = epoch_items(segs([10]), 16000, 640, 0, 0, 1)
    bs = global_batches(items, 3.0, 1)
    assert all(sum(i.num for i in b) / 16000 >= 3.0 for b in bs[:-1])
    assert sum(len(b) for b in bs) == 10


def test_loader_workers_yield_in_plan_order_and_resume(tiny_bank):
    sp = spec(
        root=tiny_bank,
        teachers={"tspeech": [1, 4], "tmusic": [2]},
        shards=("s000", "s001", "s002"),
        batch_seconds=2.5,
    )
    n = len(BankBatches(sp, 0).micro_batches())
    order = [b["index"] for b in make_loader(sp, 0, 0, 2, 2, False)]
    assert order == list(range(n))
    resumed = list(make_loader(sp, 0, 3, 2, 2, False))
    assert [b["index"] for b in resumed] == list(range(3, n))
    alone = list(make_loader(sp, 0, 0, 0, 2, False))
    # an endless stream goes on into the next epoch without restarting the workers
    stream = make_loader(sp, 0, n - 1, 2, 2, False, epochs=None)
    two = [(b["epoch"], b["index"]) for b in itertools.islice(stream, 3)]
    assert two == [(0, n - 1), (1, 0), (1, 1)]
    torch.testing.assert_close(resumed[0]["wave"], alone[3]["wave"])
    b = alone[0]
    assert b["wave"].shape[0] == len(b["domains"]) == b["lengths"].shape[0]
    assert set(b["targets"]) == {"tspeech", "tmusic"} and set(b["targets"]["tspeech"]) == {1, 4}
    # tmusic skipped speech at extraction: absent there
    for k, d in enumerate(b["domains"]):
        assert bool(b["present"]["tmusic"][k]) == (d != "speech")
        assert bool(b["present"]["tspeech"][k])


def _reference(reader, items, teachers):
    """The micro-batch as one BankReader.read per item gives it, padded (what the loader did
    before it decoded into the batch's tensors)."""
    datas = [reader.read(it.shard, it.index, (it.start, it.num)) for it in items]
    n = max(len(d.audio) for d in datas)
    wave = torch.zeros(len(datas), n)
    for b, d in enumerate(datas):
        wave[b, : len(d.audio)] = torch.from_numpy(d.audio.astype("float32") / 32768.0)
    out = {
        "ids": [d.segment.id for d in datas],
        "wave": wave,
        "targets": {},
        "lengths": {},
        "present": {},
    }
    for name, layers in teachers.items():
        have = [d for d in datas if name in d.features]
        t = max([1] + [d.features[name][layers[0]].shape[0] for d in have])
        dim = have[0].features[name][layers[0]].shape[1] if have else 1
        out["present"][name] = [name in d.features for d in datas]
        out["lengths"][name] = [
            d.features[name][layers[0]].shape[0] if name in d.features else 0 for d in datas
        ]
        out["targets"][name] = {}
        for layer in layers:
            z = torch.zeros(len(datas), t, dim)
            for b, d in enumerate(datas):
                if name in d.features:
                    f = torch.from_numpy(d.features[name][layer])
                    z[b, : len(f)] = f
            out["targets"][name][layer] = z
    return out


@pytest.mark.parametrize(
    "layout,codec,dtype",
    [
        ("zarr", "float16", torch.float16),
        ("zarr", "bfloat16", torch.bfloat16),
        ("webdataset", "float16", torch.float16),
        ("zarr", "int8-channel", torch.float32),
    ],
)
def test_loader_batches_equal_one_read_per_segment(tmp_path, teachers, layout, codec, dtype):
    """The loader decodes into the batch's tensors in the codec's exact dtype: same crops, ids,
    order and values (after .float()) as reading each segment on its own."""
    from audistill.shards.reader import BankReader
    from audistill.tools.bench.synth import write_bank

    root = str(tmp_path / "bank")
    for t in teachers:
        t.record = functools.partial(t.record, codec=codec)  # write_bank stores what record() says
    write_bank(
        root, teachers, num_shards=3, segments_per_shard=5, seconds=(1.0, 7.0), layout=layout
    )
    want = {"tspeech": [1, 4], "tmusic": [2, 3]}
    sp = spec(
        root=root,
        teachers=want,
        shards=("s000", "s001", "s002"),
        batch_seconds=3.0,
        crop_samples=32000,
    )
    ds = BankBatches(sp, 0, epochs=2)
    reader = BankReader(root, teachers=want)
    got = list(ds)
    assert len(got) == 2 * len(ds.micro_batches())
    for b in got:
        items, _ = ds.micro_batches(b["epoch"])[b["index"]]
        ref = _reference(reader, items, want)
        assert b["ids"] == ref["ids"]
        torch.testing.assert_close(b["wave"], ref["wave"], rtol=0, atol=0)
        for name, layers in want.items():
            assert b["present"][name].tolist() == ref["present"][name]
            assert b["target_lengths"][name].tolist() == ref["lengths"][name]
            for layer in layers:
                z = b["targets"][name][layer]
                assert z.dtype == dtype
                torch.testing.assert_close(z.float(), ref["targets"][name][layer], rtol=0, atol=0)


def test_worker_batches_made_in_shared_memory_equal_in_process_ones(tiny_bank):
    """Batches a worker builds in shared memory arrive equal to those built in the trainer's
    process."""
    sp = spec(
        root=tiny_bank,
        teachers={"tspeech": [1, 4], "tmusic": [2]},
        shards=("s000", "s001", "s002"),
        batch_seconds=2.5,
    )
    alone = list(make_loader(sp, 0, 0, 0, 2, False))
    workers = list(make_loader(sp, 0, 0, 2, 2, False))
    assert len(alone) == len(workers)
    for a, w in zip(alone, workers, strict=True):
        assert a["ids"] == w["ids"] and (a["epoch"], a["index"]) == (w["epoch"], w["index"])
        torch.testing.assert_close(w["wave"], a["wave"], rtol=0, atol=0)
        for name, layers in a["targets"].items():
            for layer, z in layers.items():
                torch.testing.assert_close(w["targets"][name][layer], z, rtol=0, atol=0)
            assert w["target_lengths"][name].tolist() == a["target_lengths"][name].tolist()
