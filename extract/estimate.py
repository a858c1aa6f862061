"""``--dry-run`` estimates: frames and bytes per teacher and layer, from configs only (no
weights)."""

from __future__ import annotations

import math
from importlib.metadata import entry_points

import torch

from audistill.shards.segments import SAMPLE_RATE

from .spec import TeacherSpec, resolve_layers
from .teachers import ENTRY_POINT_GROUP, STUDENT_RATE


def teacher_shape(spec: TeacherSpec) -> dict | None:
    """{"frame_rate", "dim", "num_layers"} read from a transformers config or a plugin's
    ``describe(spec)``; None when it cannot be known without loading the model."""
    if spec.kind != "hf":
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == spec.kind:
                try:
                    factory = ep.load()
                except ImportError:
                    return None
                describe = getattr(factory, "describe", None)
                return describe(spec) if describe else None
        return None
    from transformers import AutoConfig

    kw = {"revision": spec.revision or None, "trust_remote_code": spec.trust_remote_code}
    try:
        c = AutoConfig.from_pretrained(spec.source, **kw)
    except (OSError, ValueError):
        return None
    if c.model_type == "whisper":
        return {"frame_rate": 50.0, "dim": c.d_model, "num_layers": c.encoder_layers + 1}
    if c.model_type == "audio-spectrogram-transformer":
        return {
            "frame_rate": 100.0 / c.time_stride,
            "dim": c.hidden_size,
            "num_layers": c.num_hidden_layers + 1,
        }
    # the conv stride applies at the model's own input rate (its feature extractor's), to which
    # extraction resamples: a 24 kHz model with stride 320 stores 75 Hz, not 50
    stride = math.prod(getattr(c, "conv_stride", [320]))
    return {
        "frame_rate": input_rate(spec, kw) / stride,
        "dim": c.hidden_size,
        "num_layers": c.num_hidden_layers + 1,
    }


def input_rate(spec: TeacherSpec, kw: dict) -> int:
    """The sample rate a waveform model takes: its feature extractor's (read from its config file,
    no weights), 16 kHz where it has none - as the transformers adapter decides."""
    from transformers import AutoFeatureExtractor

    try:
        fe = AutoFeatureExtractor.from_pretrained(spec.source, **kw)
    except (OSError, ValueError):
        return SAMPLE_RATE
    return int(getattr(fe, "sampling_rate", SAMPLE_RATE) or SAMPLE_RATE)


def bits_per_value(spec: TeacherSpec, dim: int) -> float | None:
    """Bits per value of the codec's parts before lossless compression (an upper bound); None for
    a codec fitted on the corpus, unknown until then (None, not NaN: the estimate is JSON)."""
    codec = spec.make_codec()
    if codec.needs_fit:
        return None
    x = torch.randn(256, dim, generator=torch.Generator().manual_seed(0))
    parts = codec.encode(x, None)
    nbytes = sum(v.numel() * v.element_size() for v in parts.values())
    return 8.0 * nbytes / x.numel()


def estimate_bytes(spec: TeacherSpec, seconds_per_domain: dict[str, float]) -> dict:
    seconds = sum(v for d, v in seconds_per_domain.items() if spec.runs_on(d))
    shape = teacher_shape(spec)
    if shape is None:
        return {"seconds": seconds, "note": "shape unknown without loading the model"}
    rate = STUDENT_RATE if spec.frame_policy == "50hz" else shape["frame_rate"]
    layers = resolve_layers(spec.layers, shape["num_layers"] - 1)
    frames = int(seconds * rate)
    bpv = bits_per_value(spec, shape["dim"])
    per_layer = None if bpv is None else frames * shape["dim"] * bpv / 8
    return {
        "seconds": seconds,
        "frame_rate": rate,
        "dim": shape["dim"],
        "layers": layers,
        "frames": frames,
        "bits_per_value": bpv,
        "bytes_per_layer": per_layer,
        "bytes": None if per_layer is None else per_layer * len(layers),
    }
