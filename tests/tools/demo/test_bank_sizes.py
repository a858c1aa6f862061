"""Bank accounting: audio and features apart, and bits per value that include the fitted codec
state a reader needs to decode (VQ codebooks), on real banks."""

from __future__ import annotations

import pytest

from audistill.shards.bank import Bank
from audistill.tools.demo.bank_sizes import bank_sizes

from ...shards.helpers import make_bank


def test_float32_bank_has_no_codec_state(tmp_path):
    make_bank(tmp_path / "b", "webdataset")
    s = bank_sizes(str(tmp_path / "b"))
    bank = Bank.open(str(tmp_path / "b"))
    assert (
        s["codec_state_bytes"] == 0
        and s["audio_bytes"] > 0
        and s["feature_bytes"] >= s["code_bytes"] > 0
    )
    assert s["audio_bytes"] + s["feature_bytes"] + s["shard_other_bytes"] == sum(
        r.bytes for r in bank.catalog.shards.values()
    )
    assert (
        s["bits_per_value"] == s["bits_per_value_codes"] and 20 < s["bits_per_value"] <= 33
    )  # float32, compressed


def test_vq_codebooks_count_in_bits_per_value(tmp_path):
    make_bank(tmp_path / "b", "zarr", codec="mvq")
    s = bank_sizes(str(tmp_path / "b"))
    files = sorted((tmp_path / "b" / "codec_state").rglob("*.npz"))
    assert len(files) == 5 and s["codec_state_bytes"] == sum(f.stat().st_size for f in files)
    layer = s["layers"]["speechy/L1"]
    assert (
        layer["state_bytes"]
        == (tmp_path / "b" / "codec_state" / "speechy" / "L01.npz").stat().st_size
    )
    assert layer["bits_per_value"] == pytest.approx(
        8 * (layer["code_bytes"] + layer["state_bytes"]) / layer["values"]
    )
    # at this size the codebooks outweigh the codes: bits per value with them is several times more
    assert s["bits_per_value"] > 2 * s["bits_per_value_codes"]
