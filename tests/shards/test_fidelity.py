"""What a re-encoded bank lost against its source, per teacher layer (shards/fidelity.py)."""

from __future__ import annotations

import numpy as np
import pytest

from audistill.shards.copy import recode_bank
from audistill.shards.errors import MissingDataError, ShardError
from audistill.shards.fidelity import ErrorStats, compare_banks, summarize

from .helpers import make_bank


def _stats(x, xh, chunks=1) -> ErrorStats:
    st = ErrorStats()
    for a, b in zip(np.array_split(x, chunks), np.array_split(xh, chunks), strict=True):
        st.add(a, b)
    return st


def test_known_answers():
    rng = np.random.default_rng(0)
    # channels of very different scale and a large offset: the variance, not the raw energy,
    # is what a target loses
    x = rng.standard_normal((20000, 6)) * np.array([1, 2, 3, 4, 5, 6]) + 100.0
    same = _stats(x, x.copy()).summary()
    assert same["variance_lost"] == 0 and same["rel_l2"] == 0 and same["chan_err"] == 0
    assert same["cosine"] == pytest.approx(1.0) and same["frames"] == 20000

    # the mean of each channel for every frame: all of the variance is gone
    flat = _stats(x, np.broadcast_to(x.mean(0), x.shape)).summary()
    assert flat["variance_lost"] == pytest.approx(1.0, rel=1e-9)
    assert flat["chan_err"] == pytest.approx(1.0, rel=1e-9)

    # noise of a known variance added to one channel only
    noisy = x.copy()
    noisy[:, 0] += rng.standard_normal(len(x)) * 0.5  # channel 0's variance is 1: a quarter lost
    r = _stats(x, noisy).summary()
    total_var = float(x.var(0).sum())
    assert r["variance_lost"] == pytest.approx(0.25 / total_var, rel=0.05)
    # per channel: sqrt(mean over 6 channels of (0.25, 0, 0, 0, 0, 0)) = sqrt(0.25 / 6)
    assert r["chan_err"] == pytest.approx(np.sqrt(0.25 / 6), rel=0.05)
    assert r["rel_l2"] == pytest.approx(np.sqrt(0.25 * len(x) / np.square(x).sum()), rel=0.05)


def test_streaming_in_chunks_equals_one_pass_and_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3001, 5)) * 3 + 1e4  # a large offset: a naive sum of squares fails
    xh = x + rng.standard_normal(x.shape) * 0.1
    one, many = _stats(x, xh).summary(), _stats(x, xh, chunks=37).summary()
    for k in one:
        assert many[k] == pytest.approx(one[k], rel=1e-9)
    want = float(((xh - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert one["variance_lost"] == pytest.approx(want, rel=1e-9)


def test_summaries_over_layers_pool_values_channels_and_frames():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 4))
    b = rng.standard_normal((300, 8)) * 5
    sa, sb = _stats(a, a + 0.1), _stats(b, b + 1.0)
    both = summarize([sa, sb])
    err2 = 500 * 4 * 0.01 + 300 * 8 * 1.0
    var = ((a - a.mean(0)) ** 2).sum() + ((b - b.mean(0)) ** 2).sum()
    assert both["frames"] == 800
    assert both["variance_lost"] == pytest.approx(err2 / var, rel=1e-9)
    chans = np.concatenate([0.01 / a.var(0), 1.0 / b.var(0)])
    assert both["chan_err"] == pytest.approx(np.sqrt(chans.mean()), rel=1e-9)
    assert summarize([])["frames"] == 0


def test_frames_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        ErrorStats().add(np.zeros((3, 4)), np.zeros((3, 5)))


@pytest.mark.parametrize("layout", ["zarr", "webdataset"])
def test_a_recoded_bank_is_measured_against_its_source(tmp_path, layout):
    src, _ = make_bank(tmp_path / "f32", layout, shards=3, per_shard=4, durations=[6.0])
    lost, chan = {}, {}
    for codec in ("float32", "float16", "int8-delta", "mvq"):
        # mvq with 2 codebooks: 256 centroids per 6 or 4 channels (16 codebooks of these tiny
        # layers would be a 256-level scalar quantizer, nearly exact)
        config = {"codebooks": 2} if codec == "mvq" else None
        recode_bank(src, str(tmp_path / codec), codec, codec_config=config, fit_frames=2000)
        res = compare_banks(src, str(tmp_path / codec))
        assert set(res) == {"speechy/L1", "speechy/L2", "speechy/L3", "soundy/L2", "soundy/L4"}
        assert res["speechy/L1"]["frames"] == 12 * 300 and res["soundy/L2"]["frames"] == 9 * 100
        lost[codec] = max(r["variance_lost"] for r in res.values())
        chan[codec] = max(r["chan_err"] for r in res.values())
    assert lost["float32"] == 0 and chan["float32"] == 0
    assert 0 < lost["float16"] < lost["int8-delta"] < 1e-3
    assert lost["mvq"] > 3 * lost["int8-delta"]
    # the per-channel error shows what the totals (dominated by large outlier channels) hide
    assert chan["mvq"] > 10 * chan["int8-delta"] > 10 * chan["float16"]


def test_max_frames_reads_part_of_the_bank_spread_over_it(tmp_path):
    src, _ = make_bank(tmp_path / "f32", "zarr", shards=4, per_shard=4)
    recode_bank(src, str(tmp_path / "f16"), "float16")
    full = compare_banks(src, str(tmp_path / "f16"), teachers=["speechy"])
    part = compare_banks(src, str(tmp_path / "f16"), teachers=["speechy"], max_frames=1)
    assert set(full) == set(part) == {"speechy/L1", "speechy/L2", "speechy/L3"}
    assert 0 < part["speechy/L1"]["frames"] < full["speechy/L1"]["frames"]


def test_banks_of_other_segments_are_refused_naming_what_differs(tmp_path):
    a, _ = make_bank(tmp_path / "a", "zarr", shards=2, per_shard=4)
    fewer, _ = make_bank(tmp_path / "fewer", "zarr", shards=1, per_shard=4)
    other, _ = make_bank(tmp_path / "other", "zarr", shards=2, per_shard=3)
    with pytest.raises(MissingDataError, match="lacks shard 'shard-00001'"):
        compare_banks(a, fewer)
    with pytest.raises(ShardError, match="different segments.*shard 'shard-00000'"):
        compare_banks(a, other)
    with pytest.raises(MissingDataError, match="ghost"):
        compare_banks(a, other, teachers=["ghost"])
