"""HostBlocks: recycled host memory for batch parts, reused only after it is given back."""

import pytest
import torch

from audistill.extract.encode import HostBlocks


@pytest.mark.parametrize("shared", [False, True])
def test_blocks_are_reused_only_after_they_are_given_back(shared):
    pool = HostBlocks(shared=shared)
    a, sa = pool.take((4, 300, 1024), torch.uint8)
    assert a.shape == (4, 300, 1024) and a.dtype == torch.uint8 and a.is_shared() == shared
    a.fill_(7)
    b, sb = pool.take((4, 300, 1024), torch.uint8)  # `a` is still held: a new block
    assert pool.allocated == 2 and sb.data_ptr() != sa.data_ptr()
    pool.give([sa])
    c, sc = pool.take((4, 280, 512), torch.int16)  # fits in a's block (at most 2x its size): reused
    assert pool.allocated == 2 and sc.data_ptr() == sa.data_ptr() and c.shape == (4, 280, 512) and c.dtype == torch.int16
    pool.give([sb])
    tiny, _ = pool.take((1, 10, 16), torch.uint8)  # far smaller than any free block: its own
    assert pool.allocated == 3 and tiny.numel() == 160
    empty, none = pool.take((0, 5), torch.float32)
    assert empty.shape == (0, 5) and none is None


def test_free_list_is_bounded():
    pool = HostBlocks(shared=False, max_free=2)
    held = [pool.take((1 << 20,), torch.uint8)[1] for _ in range(5)]
    pool.give(held)
    assert len(pool.free) == 2
