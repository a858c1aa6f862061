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

WavLM's attention: transformers runs it through ``F.multi_head_attention_forward`` with
``need_weights=True`` (materializing and head-averaging every (T, T) weight matrix, which nobody
reads here). The loaded model's attention modules are given the same call with
``need_weights=False``, which PyTorch runs as fused scaled-dot-product attention with the gated
relative-position bias as the mask: the same function (tested equal to float rounding), 14 % less
time for a 4-layer base-width model on 20 s batches on the CPU.

Whisper's log-mel and AST's Kaldi fbank are computed on the teacher's device, for the whole
padded batch, in float32 (outside autocast): the same computation as their transformers feature
extractors (tested equal), without the host round trip those take (a device sync per batch, which
would stall the extraction pipeline's overlap, plus per-item host work).
"""

from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path

import numpy as np
import torch

from audistill.shards.devices import length_mask
from audistill.shards.segments import SAMPLE_RATE

from .errors import TeacherError
from .spec import TeacherSpec
from .teachers import Teacher

W2V_TYPES = (
    "wav2vec2",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "wav2vec2-conformer",
    "unispeech",
    "unispeech-sat",
    "wav2vec2-bert",
)


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
            raise TeacherError(
                f"teacher {spec.name!r}: {src} needs remote code; set trust_remote_code = true "
                "in the spec (or pass --trust-remote-code) if you trust it"
            ) from e
        raise TeacherError(f"teacher {spec.name!r}: cannot load config from {src}: {e}") from e
    except OSError as e:
        raise TeacherError(
            f"teacher {spec.name!r}: cannot load {src} (offline? wrong id/folder?): {e}"
        ) from e
    # noqa: BLE001 - a config.json with values of the wrong type (huggingface_hub's validation)
    except Exception as e:
        raise TeacherError(
            f"teacher {spec.name!r}: invalid config in {src}: {type(e).__name__}: {e}"
        ) from e
    try:
        model = AutoModel.from_pretrained(src, config=config, **kw)
    except (OSError, ValueError) as e:
        raise TeacherError(
            f"teacher {spec.name!r}: cannot load model weights from {src}: {e}"
        ) from e
    # noqa: BLE001 - truncated or damaged weights (safetensors' own error type)
    except Exception as e:
        raise TeacherError(
            f"teacher {spec.name!r}: damaged model weights in {src}: {type(e).__name__}: {e}"
        ) from e
    try:
        fe = AutoFeatureExtractor.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        if (
            Path(src) / "preprocessor_config.json"
        ).is_file():  # there, but unreadable: never silently the defaults
            raise TeacherError(
                f"teacher {spec.name!r}: cannot read {src}/preprocessor_config.json: {e}"
            ) from e
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
    raise TeacherError(
        f"teacher {spec.name!r}: model type {mtype!r} is not supported (supported: "
        f"{', '.join(W2V_TYPES)}, whisper, audio-spectrogram-transformer; others as plugins)"
    )


def _resample(wave: torch.Tensor, rate: int) -> torch.Tensor:
    if rate == SAMPLE_RATE:
        return wave
    import torchaudio

    return torchaudio.functional.resample(wave, SAMPLE_RATE, rate)


class Wav2Vec2Teacher(Teacher):
    def __init__(self, spec, device, config, model, fe):
        rate = int(getattr(fe, "sampling_rate", SAMPLE_RATE) or SAMPLE_RATE)
        stride = math.prod(getattr(config, "conv_stride", [5, 2, 2, 2, 2, 2, 2]))
        self.normalize = bool(getattr(fe, "do_normalize", True))
        self.use_mask = bool(getattr(fe, "return_attention_mask", True))
        super()._setup(
            spec,
            device,
            model.to(device),
            rate / stride,
            config.hidden_size,
            config.num_hidden_layers + 1,
            {"model_type": config.model_type, "normalize": self.normalize},
        )
        self.input_sample_rate = rate
        # A group-norm feature encoder normalizes over padding; data2vec-audio's stacked positional
        # convolutions carry padding into real frames: both are batched by equal length only.
        self.pad_invariant = (
            getattr(config, "feat_extract_norm", "layer") != "group"
            and self.use_mask
            and config.model_type != "data2vec-audio"
        )
        if config.model_type == "wavlm":
            fused_wavlm_attention(self.model)
        self.sync_free = config.model_type in SYNC_FREE_TYPES and sync_free_masks(
            self.model, config.model_type
        )

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
        # no padding (every length equal): no mask, as transformers itself drops an all-ones one
        padded = bool((lens < x.shape[1]).any())
        attn = mask.long() if self.use_mask and (padded or not self.sync_free) else None
        out = self.model(x, attention_mask=attn, output_hidden_states=True)
        hs = out.hidden_states
        return {k: hs[k] for k in self.layers}


# transformers model types whose padding masks are rebuilt without host syncs (sync_free_masks)
SYNC_FREE_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


def sync_free_masks(model: torch.nn.Module, model_type: str) -> bool:
    """Make ``model``'s forward with a padding mask queue on the device without waiting for it.

    transformers' wav2vec 2.0-family forward synchronizes the host twice per call with a mask:
    ``_get_feature_vector_attention_mask`` assigns through tensor indices (a pageable host-to-
    device copy of the value) and the encoder zeroes padded frames by boolean indexing
    (``hidden_states[~mask] = 0``: a ``nonzero``). The same masks are made here on the device with
    no data-dependent shapes: the frame mask by comparison with the frame lengths, the encoder is
    called without a mask after zeroing padded frames with ``masked_fill``, and each encoder layer
    is handed the mask the encoder would have given it (WavLM's layers take the 2-D frame mask;
    the others the 4-D mask of ``create_bidirectional_mask``, always materialized: its skip for a
    mask without padding reads the mask on the host). Returns False (nothing changed) for a model
    not shaped as expected."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if not hasattr(model, "_get_feat_extract_output_lengths") or layers is None:
        return False
    model._get_feature_vector_attention_mask = _frame_mask.__get__(model)
    held = (
        threading.local()
    )  # the mask of the forward running in this thread (one model, many threads)
    encoder.forward = _MaskedEncoder(encoder.forward, encoder.config, held, model_type == "wavlm")
    for layer in layers:
        layer.forward = _MaskedLayer(layer.forward, held)
    return True


def _frame_mask(
    self, feature_vector_length: int, attention_mask: torch.Tensor, add_adapter=None
) -> torch.Tensor:
    """transformers' ``_get_feature_vector_attention_mask`` (bool (B, T), True up to each item's
    frame count) from a comparison instead of an index assignment."""
    n = self._get_feat_extract_output_lengths(attention_mask.sum(-1), add_adapter=add_adapter).to(
        torch.long
    )
    return torch.arange(feature_vector_length, device=attention_mask.device)[None] < n[:, None]


class _MaskedEncoder:
    """An encoder forward that zeroes padded frames itself and runs the encoder without a mask,
    its layers getting the mask through ``held`` (per thread: threads may share one model)."""

    def __init__(self, forward, config, held: threading.local, frame_mask_to_layers: bool):
        self.forward, self.config, self.held, self.two_d = (
            forward,
            config,
            held,
            frame_mask_to_layers,
        )

    def __call__(self, hidden_states, attention_mask=None, **kwargs):
        if attention_mask is None:
            return self.forward(hidden_states, attention_mask=None, **kwargs)
        from transformers.masking_utils import create_bidirectional_mask

        mask = attention_mask.bool()  # (B, T)
        hidden_states = hidden_states.masked_fill(~mask[..., None], 0)  # (B, T, D)
        self.held.mask = (
            mask
            if self.two_d
            else create_bidirectional_mask(
                config=self.config,
                inputs_embeds=hidden_states,
                attention_mask=mask,
                allow_is_bidirectional_skip=False,
            )
        )
        try:
            return self.forward(hidden_states, attention_mask=None, **kwargs)
        finally:
            self.held.mask = None


class _MaskedLayer:
    """An encoder layer's forward taking the mask ``held`` by its encoder's
    :class:`_MaskedEncoder`."""

    def __init__(self, forward, held: threading.local):
        self.forward, self.held = forward, held

    def __call__(self, *args, **kwargs):
        mask = getattr(self.held, "mask", None)
        if mask is not None:
            kwargs["attention_mask"] = mask
        return self.forward(*args, **kwargs)


def fused_wavlm_attention(model: torch.nn.Module) -> int:
    """Give every WavLM attention module of ``model`` :func:`_wavlm_attention` (no weights kept);
    returns how many. Modules not shaped as expected keep transformers' own."""
    from transformers.models.wavlm import modeling_wavlm

    need = (
        "embed_dim",
        "num_heads",
        "dropout",
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "torch_multi_head_self_attention",
    )
    n = 0
    for mod in model.modules():
        if isinstance(mod, modeling_wavlm.WavLMAttention) and all(hasattr(mod, a) for a in need):
            mod.torch_multi_head_self_attention = _wavlm_attention.__get__(mod)
            n += 1
    return n


def _wavlm_attention(
    self,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gated_position_bias: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    """transformers' ``WavLMAttention.torch_multi_head_self_attention`` without the attention
    weights: ``F.multi_head_attention_forward`` then runs fused scaled-dot-product attention."""
    import torch.nn.functional as F

    query = hidden_states.transpose(0, 1)  # (T, B, D)
    # the masks in the dtype the projections run in (autocast's), as fused attention wants them
    dev = hidden_states.device.type
    autocast = dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev)
    dtype = torch.get_autocast_dtype(dev) if autocast else hidden_states.dtype
    bias = gated_position_bias.to(dtype)
    pad = None
    if attention_mask is not None:  # padding keys, as an additive mask
        pad = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
        pad = pad.masked_fill_(attention_mask.ne(1), float("-inf"))
    out, _ = F.multi_head_attention_forward(
        query,
        query,
        query,
        self.embed_dim,
        self.num_heads,
        torch.empty([0]),
        torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)),
        None,
        None,
        False,
        self.dropout,
        self.out_proj.weight,
        self.out_proj.bias,
        self.training,
        pad,
        need_weights=False,
        attn_mask=bias,
        use_separate_proj_weight=True,
        q_proj_weight=self.q_proj.weight,
        k_proj_weight=self.k_proj.weight,
        v_proj_weight=self.v_proj.weight,
    )
    return out.transpose(0, 1), None


def _float32(device: torch.device):
    """Autocast off on ``device`` (a no-op where there is no autocast, e.g. the meta device)."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _check_rate(spec: TeacherSpec, fe) -> None:
    """Spectrogram teachers compute their extractor's features from 16 kHz audio themselves."""
    rate = int(getattr(fe, "sampling_rate", SAMPLE_RATE) or SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise TeacherError(
            f"teacher {spec.name!r}: its feature extractor expects {rate} Hz audio; "
            f"only {SAMPLE_RATE} Hz is supported for this model type"
        )


class WhisperTeacher(Teacher):
    """Whisper encoder: 30 s window, 50 Hz, keep ceil(n/320) frames."""

    def __init__(self, spec, device, config, model, fe):
        from transformers import WhisperFeatureExtractor

        self.fe = (
            fe if fe is not None else WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        )
        self.window = int(self.fe.n_samples)  # 480000
        self.max_frames = int(config.max_source_positions)  # 1500
        self.hop = self.window // self.max_frames  # 320
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        super()._setup(
            spec,
            device,
            encoder.to(device),
            SAMPLE_RATE / self.hop,
            config.d_model,
            config.encoder_layers + 1,
            {"model_type": "whisper", "window_samples": self.window},
        )
        self._mel = (
            torch.from_numpy(np.asarray(self.fe.mel_filters, dtype=np.float32))
            .T.contiguous()
            .to(self.device)
        )
        self._hann = torch.hann_window(self.fe.n_fft, device=self.device)
        if getattr(self.fe, "do_normalize", False):
            raise TeacherError(
                f"teacher {spec.name!r}: a Whisper feature extractor with do_normalize is not "
                "supported (the released models do not normalize)"
            )
        _check_rate(spec, self.fe)

    def _native_frames(self, num_samples_16k: int) -> int:
        return max(1, min(self.max_frames, -(-num_samples_16k // self.hop)))

    def _forward(self, wave, lengths):
        hs = self.model(self.log_mel(wave), output_hidden_states=True).hidden_states
        return {k: hs[k] for k in self.layers}

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``WhisperFeatureExtractor`` on the device: (B, N) 16 kHz audio, zero past each item's
        length, -> (B, n_mels, 3000) for the 30 s window (cut or zero-padded to it)."""
        fe = self.fe
        with _float32(wave.device):
            x = wave[:, : self.window].float()
            x = torch.nn.functional.pad(x, (0, self.window - x.shape[1]))
            if fe.dither:
                x = x + fe.dither * torch.randn_like(x)
            stft = torch.stft(x, fe.n_fft, fe.hop_length, window=self._hann, return_complex=True)
            mel = self._mel @ (stft[..., :-1].abs() ** 2)  # (B, n_mels, 3000)
            log = mel.clamp(min=1e-10).log10()
            log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)  # per item
            return (log + 4.0) / 4.0


class ASTTeacher(Teacher):
    """Audio Spectrogram Transformer: per time column, the mean over frequency patches."""

    def __init__(self, spec, device, config, model, fe):
        from transformers import ASTFeatureExtractor

        self.fe = (
            fe
            if fe is not None
            else ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)
        )
        self.f_dim, self.t_dim = model.embeddings.get_shape(config)
        self.patch, self.tstride = int(config.patch_size), int(config.time_stride)
        self.max_len = int(config.max_length)
        super()._setup(
            spec,
            device,
            model.to(device),
            100.0 / self.tstride,
            config.hidden_size,
            config.num_hidden_layers + 1,
            {
                "model_type": "ast",
                "pooling": "mean over frequency patches",
                "freq_patches": self.f_dim,
                "time_patches": self.t_dim,
            },
        )
        from torchaudio.compliance import kaldi

        banks, _ = kaldi.get_mel_banks(
            self.fe.num_mel_bins, self.NFFT, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0
        )  # (mel, NFFT/2)
        self._banks = (
            torch.nn.functional.pad(banks, (0, 1)).T.contiguous().to(self.device, torch.float32)
        )
        self._window = torch.hann_window(self.WIN, periodic=False, device=self.device)
        _check_rate(spec, self.fe)

    # torchaudio.compliance.kaldi.fbank as ASTFeatureExtractor calls it: 25 ms Hanning windows every
    # 10 ms (snip_edges), DC offset removed, pre-emphasis 0.97, 512-point power spectrum, Kaldi mel
    # banks from 20 Hz, log with a float-epsilon floor, no dither, no energy.
    WIN, HOP, NFFT, PREEMPH = 400, 160, 512, 0.97

    def fbank(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ASTFeatureExtractor`` on the device for a whole batch: (B, N) 16 kHz audio, zero past
        each item's ``lengths``, -> (B, max_length, mel): each item's frames (those that fit in its
        real audio), zero-padded or cut to ``max_length``, then normalized."""
        dev = wave.device
        with _float32(dev):
            x = wave.float()
            if x.shape[1] < self.WIN:
                x = torch.nn.functional.pad(x, (0, self.WIN - x.shape[1]))
            frames = x.unfold(1, self.WIN, self.HOP)  # (B, M, WIN)
            frames = frames - frames.mean(2, keepdim=True)
            prev = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
            frames = (frames - self.PREEMPH * prev) * self._window
            spec = torch.fft.rfft(frames, n=self.NFFT).abs().pow(2)  # (B, M, NFFT/2 + 1)
            fb = (spec @ self._banks).clamp_min(torch.finfo(torch.float32).eps).log()  # (B, M, mel)
            counts = torch.tensor(
                [1 + (int(n) - self.WIN) // self.HOP if int(n) >= self.WIN else 0 for n in lengths]
            )
            keep = length_mask(counts, fb.shape[1], dev)  # frames that fit in each item's audio
            fb = fb * keep[..., None]
            fb = fb[:, : self.max_len]
            fb = torch.nn.functional.pad(fb, (0, 0, 0, self.max_len - fb.shape[1]))
            if self.fe.do_normalize:
                fb = (fb - self.fe.mean) / (self.fe.std * 2)
            return fb

    def _native_frames(self, num_samples_16k: int) -> int:
        fbank = max(0, 1 + (num_samples_16k - 400) // 160) if num_samples_16k >= 400 else 0
        fbank = min(fbank, self.max_len)
        cols = (fbank - self.patch) // self.tstride + 1 if fbank >= self.patch else 1
        return max(1, min(self.t_dim, cols))

    def _forward(self, wave, lengths):
        hs = self.model(self.fbank(wave, lengths), output_hidden_states=True).hidden_states
        out = {}
        for k in self.layers:
            h = hs[k][:, -self.f_dim * self.t_dim :]  # (B, F*T, D): special tokens dropped
            out[k] = h.reshape(h.shape[0], self.f_dim, self.t_dim, h.shape[2]).mean(1)  # (B, T, D)
        return out
