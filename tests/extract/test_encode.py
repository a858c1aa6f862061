"""HostBlocks: recycled host memory for batch parts, reused only after it is given back; carve."""

import pytest
import torch

from audistill.extract.encode import HostBlocks, carve


@pytest.mark.parametrize("shared", [False, True])
def test_blocks_are_reused_only_after_they_are_given_back(shared):
    pool = HostBlocks(shared=shared)
    sa = pool.take(1_200_000)
    a = carve(sa, 0, (4, 300, 1000), torch.uint8)
    assert a.is_shared() == shared and sa.nbytes() == 2 << 20  # whole MiB
    a.fill_(7)
    sb = pool.take(1_200_000)  # `sa` is still held: a new block
    assert pool.allocated == 2 and sb.data_ptr() != sa.data_ptr()
    pool.give([sa])
    sc = pool.take(1_100_000)  # fits in sa (at most about twice the size): reused
    assert pool.allocated == 2 and sc.data_ptr() == sa.data_ptr()
    pool.give([sb])
    assert (
        pool.take(1000).nbytes() == 1 << 20 and pool.allocated == 3
    )  # far smaller: a block of its own
    assert pool.take(0) is None


def test_parts_carved_from_one_block_do_not_overlap():
    pool = HostBlocks(shared=False)
    s = pool.take(3 * 64 + 4 * 6)
    x = carve(s, 0, (2, 3), torch.float32)
    y = carve(s, 64, (5,), torch.uint8)
    z = carve(s, 128, (3, 2), torch.int16)
    x.fill_(1.5), y.fill_(9), z.fill_(-3)
    assert x.sum() == 9 and y.sum() == 45 and z.sum() == -18
    with pytest.raises(AssertionError):
        carve(s, 2, (1,), torch.float32)  # misaligned
    assert carve(None, 0, (0, 4), torch.float16).shape == (0, 4)


def test_free_list_is_bounded_by_one_shards_blocks():
    """A shard's blocks are all kept for the next shard, but the free list never grows past the
    most one shard gave back (nor below max_free)."""
    pool = HostBlocks(shared=False, max_free=2)
    for _ in range(3):  # shards of 5 batches, one block each, the second kind of shard bigger
        pool.give([pool.take(1 << 20) for _ in range(5)])
        assert len(pool.free) == 5
    assert pool.allocated == 5  # the later shards reused every block
    pool.give([pool.take(1 << 20) for _ in range(2)] + [pool.take(3 << 20) for _ in range(4)])
    assert len(pool.free) == 6 and pool.allocated == 9
    pool.give([pool.take(8 << 20)])  # a lone large batch: still at most 6 free, the largest kept
    assert len(pool.free) == 6 and max(s.nbytes() for s in pool.free) == 8 << 20


class _DoneEvent:  # what a CUDA event is once its copies have finished
    def synchronize(self):
        pass


@pytest.mark.parametrize("mode", ["rows", "shared"])
def test_staged_results_equal_arrays_and_share_one_block_per_batch(mode):
    """The CUDA hand-over (staged parts of every teacher of a batch copied into one recycled
    block, items as Rows) gives exactly the per-item arrays; refused items are None."""
    from audistill.extract.encode import BatchBlock, Encoded, Rows
    from audistill.shards.codecs import get_codec

    g = torch.Generator().manual_seed(0)
    feats = {1: torch.randn(3, 50, 16, generator=g), 4: torch.randn(3, 50, 16, generator=g)}
    feats[4][2, 3, 0] = float("nan")  # item 2 is refused
    flen = [50, 31, 12]
    teachers = [
        (get_codec("int8-row"), feats),
        (get_codec("float16"), {2: torch.randn(3, 50, 8, generator=g)}),
    ]
    refs = [Encoded(c, f, flen, {}).result("arrays") for c, f in teachers]
    encs = [Encoded(c, f, flen, {}) for c, f in teachers]
    for enc in encs:
        enc.event = _DoneEvent()  # as on CUDA: the parts are staged and must be copied out
    pool = HostBlocks(shared=mode == "shared")
    block = BatchBlock(pool, mode == "shared", sum(enc.copy_bytes(mode) for enc in encs))
    assert block.recycled and pool.allocated == 1
    for enc, ref in zip(encs, refs, strict=True):
        got = enc.result(mode, block)
        assert (got[2] is None) == (ref[2] is None) == (enc is encs[0])
        for a, b in zip(ref, got, strict=True):
            for layer in a or {}:
                for k in a[layer]:
                    r = b[layer][k]
                    assert (
                        isinstance(r, Rows)
                        and r.block.untyped_storage().data_ptr() == block.storage.data_ptr()
                    )
                    arr = r.array()
                    assert arr.dtype == a[layer][k].dtype and (arr == a[layer][k]).all()
                    assert r.block.is_shared() == (mode == "shared")
    assert (
        block.at == sum(enc.copy_bytes(mode) for enc in encs) <= block.storage.nbytes()
    )  # carved in turn
