import pytest
import torch

from audistill.train.model import Student, count_parameters
from audistill.train.sizes import (
    PUBLISHED_PARAMS,
    SIZES,
    depth_upscale,
    student_config,
    upscale_layers,
)


@pytest.mark.parametrize("size", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_within_5_percent(size):
    with torch.device("meta"):
        m = Student(SIZES[size])
    n = count_parameters(m)
    assert abs(n / PUBLISHED_PARAMS[size] - 1) < 0.05, (size, n)


def test_xlarge_runs_at_25hz_and_others_at_50hz():
    assert SIZES["xlarge"].frame_rate == 25.0 and SIZES["xxlarge"].frame_rate == 25.0
    assert SIZES["base"].frame_rate == 50.0
    assert student_config("small", stride=4).frame_rate == 25.0


def test_depth_upscaling_copies_first_and_last_layers():
    assert upscale_layers(32, 24) == list(range(24)) + list(range(8, 32))
    cfg = student_config("tiny", depth=6)
    src = Student(cfg)
    for i, blk in enumerate(src.blocks):  # mark every block with its index
        torch.nn.init.constant_(blk.out.bias, float(i))
    state = depth_upscale(src.state_dict(), depth=6, keep=4)
    dst = Student(student_config("tiny", depth=8))
    dst.load_state_dict(state)
    got = [float(b.out.bias[0].detach()) for b in dst.blocks]
    assert got == [0, 1, 2, 3, 2, 3, 4, 5]
    assert torch.equal(dst.front.proj.weight, src.front.proj.weight)


def test_hidden_states_shapes_and_padding():
    m = Student(SIZES["tiny"]).eval()
    wave = torch.randn(2, 32000) * 0.1
    hs = m(wave, torch.tensor([32000, 16000]))
    assert len(hs) == m.num_layers == 3
    assert all(h.shape == (2, 100, 64) for h in hs)
    # how much zero padding follows an item does not change its valid frames
    x = torch.zeros(1, 24000)
    x[0, :16000] = wave[1, :16000]
    wave[1, 16000:] = 0
    hs = m(wave, torch.tensor([32000, 16000]))
    alone = m(x, torch.tensor([16000]))
    torch.testing.assert_close(hs[-1][1, :50], alone[-1][0, :50], atol=1e-4, rtol=1e-4)
