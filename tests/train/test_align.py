import torch

from audistill.shards.reader import crop_hop
from audistill.train.align import align, pool_ratio, resample_frames
from audistill.train.data import crop_length, epoch_items
from audistill.train.heads import sparse_map


def test_half_rate_teacher_mean_pools_student_frames():
    s = torch.arange(8.0).view(1, 8, 1)  # 50 Hz
    t = torch.zeros(1, 4, 1)  # 25 Hz
    x, z, n = align(s, torch.tensor([8]), t, torch.tensor([4]), 320, 640)
    assert (
        x.flatten().tolist() == [0.5, 2.5, 4.5, 6.5] and n.tolist() == [4] and z.shape == (1, 4, 1)
    )
    assert (
        pool_ratio(320, 640) == 2
        and pool_ratio(320, 320) == 1
        and pool_ratio(320, 16000 / 75) is None
    )


def test_75hz_teacher_is_resampled_to_student_rate():
    # a linear ramp in time stays a linear ramp at the frame centres of the student
    hop_t = 16000 / 75
    t = torch.tensor([(i + 0.5) * hop_t for i in range(30)]).view(1, 30, 1)  # value = centre sample
    s = torch.zeros(1, 20, 1)
    x, z, n = align(s, torch.tensor([20]), t, torch.tensor([30]), 320, hop_t)
    centres = torch.tensor([(j + 0.5) * 320 for j in range(20)])
    torch.testing.assert_close(z.flatten()[1:-1], centres[1:-1])
    assert n.tolist() == [20] and x.shape == (1, 20, 1)
    assert resample_frames(t, 5, 2.0).shape == (1, 5, 1)


def test_crops_start_on_every_teachers_frame_boundary():
    class Seg:
        def __init__(self, n):
            self.num_samples, self.domain = n, "speech"

    hop = crop_hop([320.0, 640.0, 160.0])
    assert hop == 640
    n = crop_length(1.3, hop)
    assert n % hop == 0
    items = epoch_items(
        {"a": [Seg(50000 + i * 777) for i in range(30)]}, n, hop, seed=1, epoch=0, shuffle_buffer=8
    )
    starts = [it.start for it in items]
    assert all(s % hop == 0 for s in starts) and len(set(starts)) > 3
    assert all(it.start + it.num <= 50000 + it.index * 777 for it in items)


def test_sparse_map():
    assert sparse_map(12, 12, 4) == [(3, 3), (6, 6), (9, 9), (12, 12)]
    assert sparse_map(2, 24, 2) == [(1, 12), (2, 24)]
