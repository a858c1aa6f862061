"""Hugging Face transformers teachers: wav2vec 2.0 family, Whisper encoder, AST.

* wav2vec 2.0 / HuBERT / WavLM / data2vec-audio (and remote-code models with the same call,
  e.g. MERT): raw waveform at the feature extractor's rate, per-utterance normalization over the
  real samples when the extractor asks for it, an attention mask when the extractor returns
  one. Models with a group-norm feature encoder (``feat_extract_norm="group"``) normalize over
  padding too, so they are marked ``pad_invariant=False`` and only batched with equal lengths.
  data2vec-audio's stacked positional convolutions also carry padding into real frames.
* Whisper: the encoder on the 30 s log-mel window; only the first ``ceil(n / 320)`` frames,
  which cover real audio, are kept (50 Hz).
* AST: tokens are 2 special tokens + ``F x T`` patches (index ``2 + f*T + t``); the features of a
  time column are the **mean over its F frequency patches** (the special tokens are dropped).
  Columns advance ``time_stride`` fbank frames of 10 ms, so the frame rate is
  ``100 / time_stride`` Hz (10 Hz for the released models); only columns whose patch starts
  inside the real audio are kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torchaudio

from audistill.shards.devices import length_mask
from audistill.shards.segments import SAMPLE_RATE

from .errors import TeacherError
from .spec import TeacherSpec
from .teachers import Teacher

W2V_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech",
             "unispeech-sat", "wav2vec2-bert")


def _looks_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).exists()


def _load(spec: TeacherSpec):
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    src = str(Path(spec.source).expanduser()) if _looks_local(spec.source) else spec.source
    if _looks_local(spec.source) and not Path(src).is_dir():
        raise TeacherError(f"teacher {spec.name!r}: model folder {src} does not exist")
    kw = {"revision": spec.revision or None, "trust_remote_code": spec.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(src, **kw)
    except ValueError as e:
        if "trust_remote_code" in str(e) and not spec.trust_remote_code:
            raise TeacherError(f"teacher {spec.name!r}: {src} needs remote code; set trust_remote_code = true "
                               "in the spec (or pass --trust-remote-code) if you trust it") from e
        raise TeacherError(f"teacher {spec.name!r}: cannot load config from {src}: {e}") from e
    except OSError as e:
        raise TeacherError(f"teacher {spec.name!r}: cannot load {src} (offline? wrong id/folder?): {e}") from e
    try:
        model = AutoModel.from_pretrained(src, config=config, **kw)
    except (OSError, ValueError) as e:
        raise TeacherError(f"teacher {spec.name!r}: cannot load model weights from {src}: {e}") from e
    try:
        fe = AutoFeatureExtractor.from_pretrained(src, **kw)
    except (OSError, ValueError):
        fe = None  # a bare model folder: the model type's defaults are used
    return config, model.eval(), fe


def load_hf_teacher(spec: TeacherSpec, device="cpu") -> Teacher:
    config, model, fe = _load(spec)
    mtype = config.model_type
    if mtype == "whisper":
        return WhisperTeacher(spec, device, config, model, fe)
    if mtype == "audio-spectrogram-transformer":
        return ASTTeacher(spec, device, config, model, fe)
    if mtype in W2V_TYPES or spec.trust_remote_code:
        return Wav2Vec2Teacher(spec, device, config, model, fe)
    raise TeacherError(f"teacher {spec.name!r}: model type {mtype!r} is not supported (supported: "
                       f"{', '.join(W2V_TYPES)}, whisper, audio-spectrogram-transformer; others as plugins)")


def _resample(wave: torch.Tensor, rate: int) -> torch.Tensor:
    if rate == SAMPLE_RATE:
        return wave
    return torchaudio.functional.resample(wave, SAMPLE_RATE, rate)


class Wav2Vec2Teacher(Teacher):
    def __init__(self, spec, device, config, model, fe):
        rate = int(getattr(fe, "sampling_rate", SAMPLE_RATE) or SAMPLE_RATE)
        stride = math.prod(getattr(config, "conv_stride", [5, 2, 2, 2, 2, 2, 2]))
        self.normalize = bool(getattr(fe, "do_normalize", True))
        self.use_mask = bool(getattr(fe, "return_attention_mask", True))
        super()._setup(spec, device, model.to(device), rate / stride, config.hidden_size,
                       config.num_hidden_layers + 1,
                       {"model_type": config.model_type, "normalize": self.normalize})
        self.input_sample_rate = rate
        # A group-norm feature encoder normalizes over padding; data2vec-audio's stacked positional
        # convolutions carry padding into real frames: both are batched by equal length only.
        self.pad_invariant = (getattr(config, "feat_extract_norm", "layer") != "group" and self.use_mask
                              and config.model_type != "data2vec-audio")

    def _in_len(self, n16k: int) -> int:
        return int(math.ceil(n16k * self.input_sample_rate / SAMPLE_RATE))

    def _native_frames(self, num_samples_16k: int) -> int:
        n = torch.tensor(self._in_len(num_samples_16k))
        return int(self.model._get_feat_extract_output_lengths(n))

    def _forward(self, wave, lengths):
        x = _resample(wave, self.input_sample_rate)  # (B, N')
        lens = torch.tensor([min(self._in_len(int(n)), x.shape[1]) for n in lengths])
        mask = length_mask(lens, x.shape[1], x.device)  # (B, N')
        if self.normalize:
            m = mask.float()
            cnt = m.sum(1, keepdim=True).clamp(min=1)
            mean = (x * m).sum(1, keepdim=True) / cnt
            var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / cnt
            x = (x - mean) / torch.sqrt(var + 1e-7) * m
        else:
            x = x * mask
        out = self.model(x, attention_mask=mask.long() if self.use_mask else None, output_hidden_states=True)
        hs = out.hidden_states
        return {k: hs[k] for k in self.layers}


class WhisperTeacher(Teacher):
    """Whisper encoder: 30 s window, 50 Hz, keep ceil(n/320) frames."""

    def __init__(self, spec, device, config, model, fe):
        from transformers import WhisperFeatureExtractor

        self.fe = fe if fe is not None else WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.window = int(self.fe.n_samples)  # 480000
        self.max_frames = int(config.max_source_positions)  # 1500
        self.hop = self.window // self.max_frames  # 320
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        super()._setup(spec, device, encoder.to(device), SAMPLE_RATE / self.hop, config.d_model,
                       config.encoder_layers + 1, {"model_type": "whisper", "window_samples": self.window})

    def _native_frames(self, num_samples_16k: int) -> int:
        return max(1, min(self.max_frames, -(-num_samples_16k // self.hop)))

    def _forward(self, wave, lengths):
        arrays = [wave[b, : min(int(n), self.window)].float().cpu().numpy() for b, n in enumerate(lengths)]
        dev = str(self.device) if self.device.type == "cuda" else "cpu"
        feats = self.fe(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=dev)
        mel = feats["input_features"].to(self.device)  # (B, n_mels, 3000)
        hs = self.model(mel, output_hidden_states=True).hidden_states
        return {k: hs[k] for k in self.layers}


class ASTTeacher(Teacher):
    """Audio Spectrogram Transformer: per time column, the mean over frequency patches."""

    def __init__(self, spec, device, config, model, fe):
        from transformers import ASTFeatureExtractor

        self.fe = fe if fe is not None else ASTFeatureExtractor(num_mel_bins=config.num_mel_bins,
                                                                max_length=config.max_length)
        self.f_dim, self.t_dim = model.embeddings.get_shape(config)
        self.patch, self.tstride = int(config.patch_size), int(config.time_stride)
        self.max_len = int(config.max_length)
        super()._setup(spec, device, model.to(device), 100.0 / self.tstride, config.hidden_size,
                       config.num_hidden_layers + 1,
                       {"model_type": "ast", "pooling": "mean over frequency patches",
                        "freq_patches": self.f_dim, "time_patches": self.t_dim})

    def _native_frames(self, num_samples_16k: int) -> int:
        fbank = max(0, 1 + (num_samples_16k - 400) // 160) if num_samples_16k >= 400 else 0
        fbank = min(fbank, self.max_len)
        cols = (fbank - self.patch) // self.tstride + 1 if fbank >= self.patch else 1
        return max(1, min(self.t_dim, cols))

    def _forward(self, wave, lengths):
        arrays = [np.asarray(wave[b, : int(n)].float().cpu().numpy()) for b, n in enumerate(lengths)]
        feats = self.fe(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        x = feats["input_values"].to(self.device)  # (B, max_length, mel)
        hs = self.model(x, output_hidden_states=True).hidden_states
        out = {}
        for k in self.layers:
            h = hs[k][:, -self.f_dim * self.t_dim:]  # (B, F*T, D): special tokens dropped
            out[k] = h.reshape(h.shape[0], self.f_dim, self.t_dim, h.shape[2]).mean(1)  # (B, T, D)
        return out
