"""Tiny random transformers teachers made from a config (no network), saved with save_pretrained."""

from __future__ import annotations

from pathlib import Path

import torch

CONV = dict(conv_dim=(32, 32, 32), conv_stride=(5, 4, 16), conv_kernel=(10, 8, 16))  # hop 320


def make_tiny(kind: str, out: Path, seed: int = 0) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    enc = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        # 16 channels per group: below that, with a kernel of 8 or more, torch 2.11's CPU bfloat16
        # grouped conv1d is wrong on AMX machines (oneDNN; relative error ~1.1, fine with
        # ONEDNN_MAX_CPU_ISA=AVX512_CORE). Real teachers have 48-64 channels per group.
        num_conv_pos_embedding_groups=2,
    )
    if kind == "wavlm":
        model = tf.WavLMModel(
            tf.WavLMConfig(
                **enc, **CONV, feat_extract_norm="layer", num_buckets=16, max_bucket_distance=50
            )
        )
        fe = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    elif kind == "hubert":
        model = tf.HubertModel(tf.HubertConfig(**enc, **CONV, feat_extract_norm="group"))
        fe = tf.Wav2Vec2FeatureExtractor(do_normalize=False, return_attention_mask=False)
    elif kind == "wav2vec2":
        model = tf.Wav2Vec2Model(
            tf.Wav2Vec2Config(**enc, **CONV, feat_extract_norm="layer", do_stable_layer_norm=True)
        )
        fe = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    elif kind == "data2vec":
        model = tf.Data2VecAudioModel(
            tf.Data2VecAudioConfig(**{**enc, "num_conv_pos_embeddings": 5}, **CONV)
        )
        fe = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    elif kind == "whisper":
        cfg = tf.WhisperConfig(
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=80,
            vocab_size=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=3,
            max_target_positions=32,
        )
        model = tf.WhisperModel(cfg)
        fe = tf.WhisperFeatureExtractor(feature_size=80)
    elif kind == "ast":
        cfg = tf.ASTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_mel_bins=128,
            max_length=1024,
        )
        model = tf.ASTModel(cfg)
        fe = tf.ASTFeatureExtractor(num_mel_bins=128, max_length=1024)
    else:
        raise ValueError(kind)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fe.save_pretrained(out)
    return out


def make_tiny_ge2e(out: Path, seed: int = 0) -> Path:
    """A checkpoint in Resemblyzer's format (``{"model_state": ...}`` of its VoiceEncoder: a
    3-layer LSTM 40 -> 256 and a linear 256 -> 256), random weights, written to ``out``."""
    torch.manual_seed(seed)
    lstm, linear = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    state |= {f"linear.{k}": v for k, v in linear.state_dict().items()}
    state |= {"similarity_weight": torch.tensor([10.0]), "similarity_bias": torch.tensor([-5.0])}
    torch.save({"step": 1, "model_state": state}, out)
    return out
