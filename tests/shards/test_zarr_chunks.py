"""Zarr arrays read straight from their shard objects (ChunkReader) give zarr's own values, and
refuse what zarr would: a flipped byte, a link out of the shard."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from audistill.shards.errors import ShardError
from audistill.shards.layout_zarr import shard_dir
from audistill.shards.reader import BankReader
from audistill.shards.zarr_chunks import ChunkReader

from .helpers import make_bank


def _arrays(group, prefix=""):
    for name, a in group.arrays():
        yield f"{prefix}{name}", a
    for name, g in group.groups():
        yield from _arrays(g, f"{prefix}{name}/")


@pytest.mark.parametrize("codec", ["float16", "float32", "int8-channel"])
def test_direct_chunks_equal_zarr_reads(tmp_path, codec):
    make_bank(
        tmp_path / "b", "zarr", codec=codec, shards=1, per_shard=6, durations=[9.0, 11.0, 3.0]
    )
    folder = str(tmp_path / "b" / shard_dir("shard-00000"))
    group = zarr.open_group(zarr.storage.LocalStore(folder, read_only=True), mode="r")
    direct = 0
    for name, a in _arrays(group):
        cr = ChunkReader.for_array(a, folder)
        if a.metadata.to_dict()["codecs"][0]["name"] != "sharding_indexed":
            assert cr is None, name  # small arrays keep going through zarr
            continue
        assert cr is not None, name  # every array the layout shards is read directly
        direct += 1
        got = (
            np.concatenate(cr.chunks(0, cr.num_chunks))
            if cr.num_chunks
            else np.zeros((0, *a.shape[1:]))
        )
        np.testing.assert_array_equal(got, a[:])
        assert got.dtype == a.dtype
    assert direct >= 5  # audio + 2 teachers' layers


def test_random_crops_through_the_window_equal_zarr(tmp_path):
    bank, truth = make_bank(
        tmp_path / "b", "zarr", codec="float16", shards=1, per_shard=8, durations=[12.0, 20.0, 7.0]
    )
    r = BankReader(bank)
    rng = np.random.default_rng(1)
    shard = r.shards[0]
    segs = r.segments(shard)
    for _ in range(40):
        i = int(rng.integers(len(segs)))
        num = 16000 * int(rng.integers(1, 6))
        start = int(rng.integers(0, max(1, segs[i].num_samples - num) // 640 + 1)) * 640
        d = r.read(shard, i, crop=(start, num))
        seg, audio, want = truth[segs[i].id]
        np.testing.assert_array_equal(d.audio, audio[start : start + num])
        for t, layers in d.features.items():
            f0 = d.frame_start[t]
            for layer, x in layers.items():
                np.testing.assert_array_equal(x, want[t][layer][f0 : f0 + len(x)])


def _one_data_object(folder: str) -> str:
    for dirpath, _, files in os.walk(folder):
        if "/L" in dirpath and "/c" in dirpath and "speechy" in dirpath and files:
            return os.path.join(dirpath, files[0])
    raise AssertionError("no data object")


def test_a_flipped_byte_is_refused(tmp_path):
    bank, _ = make_bank(tmp_path / "b", "zarr", codec="float32", shards=1, per_shard=3)
    path = _one_data_object(str(tmp_path / "b" / shard_dir("shard-00000")))
    raw = bytearray(open(path, "rb").read())
    raw[10] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    r = BankReader(str(tmp_path / "b"), check="none")
    with pytest.raises(ShardError, match="corrupted"):
        for _ in r:
            pass


def test_a_link_out_of_the_shard_is_refused(tmp_path):
    make_bank(tmp_path / "b", "zarr", codec="float32", shards=1, per_shard=3)
    path = _one_data_object(str(tmp_path / "b" / shard_dir("shard-00000")))
    outside = tmp_path / "outside.bin"
    outside.write_bytes(open(path, "rb").read())
    os.remove(path)
    os.symlink(outside, path)
    r = BankReader(str(tmp_path / "b"), check="none")
    with pytest.raises(ShardError):
        for _ in r:
            pass
