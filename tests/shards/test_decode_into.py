"""Codec.decode_into writes exactly decode's values, in float32 or the codec's decoded_dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audistill.shards.codecs import codec_names, get_codec

from ..datagen import outlier_features


@pytest.mark.parametrize("name", codec_names())
def test_decode_into_equals_decode(name):
    rng = np.random.default_rng(0)
    c = get_codec(name)
    x = outlier_features(rng, 37, 24)
    st = c.fit(x) if c.needs_fit else None
    tst = None if st is None else {k: torch.from_numpy(v) for k, v in st.items()}
    parts = {k: v.numpy() for k, v in c.encode(torch.from_numpy(x), tst).items()}
    want = c.decode(parts, st)
    out = np.full(want.shape, np.nan, np.float32)
    c.decode_into(parts, st, out)
    np.testing.assert_array_equal(out, want)
    exact = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[c.decoded_dtype]
    narrow = np.zeros(want.shape, exact)
    c.decode_into(parts, st, narrow)
    if c.decoded_dtype == "bfloat16":  # raw bits: the float32 with the low 16 bits zero
        narrow = (narrow.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(narrow.astype(np.float32), want)  # the narrow dtype loses nothing
