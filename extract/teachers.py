"""The teacher registry and the adapter contract shared by extraction and the online-teacher
baseline.

``load_teacher(spec, device)`` returns a :class:`Teacher`. ``spec.kind == "hf"`` goes through
transformers (teachers_hf.py); any other kind is looked up in the ``audistill.teachers``
entry-point group, whose entry points resolve to a factory ``(spec, device) -> Teacher``.

Layer indexing: hidden state 0 is the embedding output before the first block, 1..L the blocks;
``num_layers`` = L + 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from importlib.metadata import entry_points

import torch
import torch.nn.functional as F

from audistill.shards.catalog import TeacherRecord
from audistill.shards.devices import length_mask
from audistill.shards.segments import SAMPLE_RATE

from .errors import TeacherError
from .spec import TeacherSpec, resolve_layers

ENTRY_POINT_GROUP = "audistill.teachers"
STUDENT_RATE = 50.0
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
CUDA_GRAPH_MODES = (
    "reduce-overhead",
    "max-autotune",
)  # torch.compile modes that capture CUDA graphs


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def resample_frames(x: torch.Tensor, num: int) -> torch.Tensor:
    """Linear resampling of one segment's frames ``(T, D)`` to ``(num, D)``."""
    if x.shape[0] == num:
        return x
    y = F.interpolate(
        x.float().t()[None], size=num, mode="linear", align_corners=False
    )  # (1, D, num)
    return y[0].t().to(x.dtype)


class Teacher:
    """Base of every adapter. Subclasses set the attributes in ``__init__`` and implement
    ``_forward`` (the model on 16 kHz audio) and ``_native_frames``; ``extract`` adds no_grad,
    autocast and the frame-rate policy.

    Attributes: ``name``, ``spec``, ``device``, ``model`` (nn.Module, for the fingerprint),
    ``native_rate`` (Hz of the model's frames), ``frame_rate`` (Hz of what ``extract`` returns),
    ``dim``, ``num_layers`` (hidden states, L + 1), ``layers`` (kept), ``input_sample_rate``,
    ``pad_invariant`` (padding a batch leaves each item's features unchanged; when False, the
    pipeline only batches segments of equal length), ``extra`` (details for the catalog).
    """

    name: str
    spec: TeacherSpec
    device: torch.device
    model: torch.nn.Module
    native_rate: float
    dim: int
    num_layers: int
    layers: list[int]
    input_sample_rate: int = SAMPLE_RATE
    pad_invariant: bool = True
    extra: dict

    def _setup(
        self,
        spec: TeacherSpec,
        device,
        model: torch.nn.Module,
        native_rate: float,
        dim: int,
        num_layers: int,
        extra: dict | None = None,
    ) -> None:
        self.name, self.spec, self.device = spec.name, spec, torch.device(device)
        self.model, self.native_rate, self.dim, self.num_layers = (
            model,
            float(native_rate),
            int(dim),
            int(num_layers),
        )
        self.layers = resolve_layers(spec.layers, num_layers - 1)
        self.extra = dict(extra or {})
        self.revision = spec.revision
        self._fingerprint: str | None = None

    @property
    def frame_rate(self) -> float:
        return STUDENT_RATE if self.spec.frame_policy == "50hz" else self.native_rate

    @property
    def run_dtype(self) -> torch.dtype:
        """The dtype the forward computes in: ``spec.dtype`` on CUDA, or anywhere with the weights
        cast to it (``precision = "weights"``); float32 otherwise."""
        if self.device.type == "cuda" or self.spec.precision == "weights":
            return _DTYPES[self.spec.dtype]
        return torch.float32

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def record(self) -> TeacherRecord:
        """The catalog's record of this teacher. ``extra`` holds the device kind and the dtype it
        runs in (the spec's dtype applies on CUDA only: elsewhere it runs float32)."""
        codec = self.spec.make_codec()
        extra = {
            "kind": self.spec.kind,
            "dtype": _DTYPE_NAMES[self.run_dtype],
            "device": self.device.type,
            "precision": self.spec.precision,
            "frame_policy": self.spec.frame_policy,
            "native_frame_rate": self.native_rate,
            "layer_semantics": "0 = embedding output, 1..L = blocks",
            **self.extra,
        }
        return TeacherRecord(
            name=self.name,
            source=self.spec.source,
            dim=self.dim,
            frame_rate=self.frame_rate,
            codec=codec.record(),
            layers=list(self.layers),
            num_layers=self.num_layers,
            revision=self.revision,
            fingerprint=self.fingerprint(),
            input_sample_rate=self.input_sample_rate,
            domains=sorted(self.spec.domains),
            home_domain=self.spec.home_domain,
            extra=extra,
        )

    def num_frames(self, num_samples_16k: int) -> int:
        if self.spec.frame_policy == "50hz":
            return max(1, int(round(num_samples_16k * STUDENT_RATE / SAMPLE_RATE)))
        return self._native_frames(int(num_samples_16k))

    def _native_frames(self, num_samples_16k: int) -> int:
        raise NotImplementedError

    def _forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> dict[int, torch.Tensor]:
        """Kept layers ``{layer: (B, T, D)}`` at the native rate for 16 kHz ``wave`` (B, N)."""
        raise NotImplementedError

    def autocast(self):
        if (
            self.device.type == "cuda"
            and self.run_dtype != torch.float32
            and self.spec.precision == "autocast"
        ):
            return torch.autocast("cuda", dtype=self.run_dtype)
        return contextlib.nullcontext()

    @torch.no_grad()
    def extract(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Features of the kept layers for 16 kHz float32 ``wave`` (B, N) with valid ``lengths``
        (B,).

        Returns ``({layer: (B, T, D)}, frame_lengths (B,))``; frames past an item's length are
        padding.
        """
        wave = wave.to(self.device, torch.float32)
        lengths = lengths.to("cpu", torch.long)
        mask = length_mask(lengths, wave.shape[1], wave.device)
        wave = wave * mask  # (B, N): exact zeros past each item's length
        graphs = self.device.type == "cuda" and self.spec.compile in CUDA_GRAPH_MODES
        if graphs:  # a new step: the previous batch's graph outputs may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            feats = self._forward(self._bucketed(wave), lengths)
        if graphs:  # the next replay overwrites the graph's outputs; the pipeline reads them later
            feats = {k: v.clone() for k, v in feats.items()}
        flen = torch.tensor([self.num_frames(int(n)) for n in lengths], dtype=torch.long)
        if self.spec.frame_policy == "50hz":
            feats = {k: self._to_50hz(v, lengths, flen) for k, v in feats.items()}
        else:
            t = int(flen.max()) if len(flen) else 0
            feats = {k: v[:, :t] for k, v in feats.items()}
        return feats, flen

    def _bucketed(self, wave: torch.Tensor) -> torch.Tensor:
        """``wave`` (B, N) zero-padded to a length that is a multiple of ``spec.bucket_seconds``
        (padding-invariant teachers only): batches then come in a few shapes, each compiled (and
        captured as a CUDA graph) once."""
        step = int(round(self.spec.bucket_seconds * SAMPLE_RATE))
        if step <= 0 or not self.pad_invariant or wave.shape[1] % step == 0:
            return wave
        return F.pad(wave, (0, step - wave.shape[1] % step))

    def _to_50hz(self, x: torch.Tensor, lengths: torch.Tensor, flen: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], int(flen.max()), x.shape[2])  # (B, T50, D)
        for b in range(x.shape[0]):
            native = self._native_frames(int(lengths[b]))
            out[b, : int(flen[b])] = resample_frames(x[b, :native], int(flen[b]))
        return out


def plugin_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


_LOAD_LOCK = threading.Lock()


def window_samples(teachers: list[Teacher]) -> int:
    """The longest input (16 kHz samples) every one of ``teachers`` takes: no planned segment is
    longer, so decoded audio that is (a wrong manifest duration) is an error."""
    return int(round(min(t.spec.max_seconds for t in teachers) * SAMPLE_RATE))


def load_teacher(spec: TeacherSpec, device="cpu") -> Teacher:
    """Build the teacher ``spec`` describes on ``device``; TeacherError when it cannot be loaded.

    One load at a time per process: transformers' ``from_pretrained`` swaps class attributes
    (``PreTrainedModel.tie_weights``, torch's init functions) for the load and puts back what it
    found, so two loads in threads can leave them swapped for good - every later model then loads
    with untied weights (seen: a Whisper ``proj_out`` left random)."""
    with _LOAD_LOCK:
        return apply_speed_levers(_load_teacher(spec, device))


def _load_teacher(spec: TeacherSpec, device="cpu") -> Teacher:
    if spec.kind == "hf":
        from .teachers_hf import load_hf_teacher

        return load_hf_teacher(spec, device)
    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec.kind]
    if not eps:
        raise TeacherError(
            f"teacher {spec.name!r}: no plugin {spec.kind!r} in entry-point group "
            f"{ENTRY_POINT_GROUP!r} (installed: {plugin_names() or 'none'}; 'hf' = transformers)"
        )
    try:
        factory = eps[0].load()
    except ImportError as e:
        raise TeacherError(
            f"teacher {spec.name!r}: plugin {spec.kind!r} cannot be imported ({e}); "
            f"install its extra, e.g. pip install 'audistill[{spec.kind}]'"
        ) from e
    teacher = factory(spec, device)
    if not isinstance(teacher, Teacher):
        raise TeacherError(f"plugin {spec.kind!r} returned {type(teacher).__name__}, not a Teacher")
    return teacher


def apply_speed_levers(teacher: Teacher) -> Teacher:
    """Apply ``spec.precision`` and ``spec.compile`` to the loaded ``teacher``'s model.

    ``precision = "weights"``: the weights are cast to the run dtype (the fingerprint is taken
    first: it names the weights as loaded) and floating inputs are cast at the model's call.
    ``compile``: ``nn.Module.compile`` in that mode (the parameters' names stay, so the
    fingerprint does too), with dynamo's automatic dynamic shapes: a second batch shape compiles
    one graph for every later shape instead of one per shape."""
    spec, model = teacher.spec, teacher.model
    if teacher.run_dtype != torch.float32:
        check_reduced_precision_convs(teacher)
    if spec.precision == "weights" and teacher.run_dtype != torch.float32:
        teacher.fingerprint()
        model.to(teacher.run_dtype)
        model.register_forward_pre_hook(_cast_inputs(teacher.run_dtype), with_kwargs=True)
    if spec.compile != "off":
        model.compile(mode=None if spec.compile == "default" else spec.compile)
    return teacher


# A convolution that computes in bfloat16 / float16 stays within this relative error of float32
# (8 / 11 bits of mantissa, accumulated in float32: about 0.003 / 0.0005 measured); a kernel that
# is wrong is off by ~1.
REDUCED_PRECISION_TOLERANCE = 0.05


def check_reduced_precision_convs(teacher: Teacher) -> None:
    """Run each distinct convolution of ``teacher.model`` once on a short random input in float32
    and in the run dtype, on the model's device, and raise TeacherError naming the module when
    they disagree beyond REDUCED_PRECISION_TOLERANCE.

    Why: a reduced-precision kernel can be wrong for some shapes on some machines, and its
    features would go into the bank looking fine. Seen with torch 2.11 on AMX CPUs: bfloat16
    grouped conv1d with fewer than 16 channels per group and a kernel of 8 or more has a relative
    error of ~1.1 (oneDNN; right with ONEDNN_MAX_CPU_ISA=AVX512_CORE). One call per distinct
    shape and dtype configuration, before the weights are cast."""
    dtype = teacher.run_dtype
    seen: set[tuple] = set()
    gen = torch.Generator().manual_seed(0)
    for name, mod in teacher.model.named_modules():
        if not isinstance(mod, torch.nn.Conv1d | torch.nn.Conv2d):
            continue
        key = (
            type(mod), mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
            mod.padding, mod.dilation, mod.groups, mod.padding_mode,
        )  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        with torch.no_grad():
            w = mod.weight.detach().float()
            b = None if mod.bias is None else mod.bias.detach().float()
            side = [
                2 * ((k - 1) * d + 1) * s + 16
                for k, s, d in zip(mod.kernel_size, mod.stride, mod.dilation, strict=True)
            ]
            x = torch.randn(1, mod.in_channels, *side, generator=gen).to(w.device)
            want = mod._conv_forward(x, w, b).float()
            got = mod._conv_forward(
                x.to(dtype), w.to(dtype), None if b is None else b.to(dtype)
            ).float()
            err = float((got - want).norm() / want.norm().clamp_min(1e-12))
        if not err <= REDUCED_PRECISION_TOLERANCE:
            raise TeacherError(
                f"teacher {teacher.spec.name!r}: {_DTYPE_NAMES[dtype]} convolution {name!r} "
                f"({type(mod).__name__}, {mod.in_channels}->{mod.out_channels}, kernel "
                f"{mod.kernel_size}, groups {mod.groups}) is wrong on this machine (relative "
                f"error {err:.2f} against float32; at most {REDUCED_PRECISION_TOLERANCE} "
                f'expected): use dtype = "fp32" for it here'
                + (" or set ONEDNN_MAX_CPU_ISA=AVX512_CORE" if teacher.device.type == "cpu" else "")
            )


def _cast_inputs(dtype: torch.dtype):
    def cast(x):
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    def hook(module, args, kwargs):
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


class TeacherEncoder:
    """A loaded teacher as a probe sees an encoder: its kept layers of one 16 kHz waveform."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.num_layers = len(teacher.layers)
        self.frame_rate = teacher.frame_rate

    def layers(self, wave) -> list[torch.Tensor]:
        """(N,) float 16 kHz -> one (T, D) tensor per kept layer, on the CPU."""
        w = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1)
        feats, flen = self.teacher.extract(w, torch.tensor([w.shape[1]]))
        return [feats[k][0, : int(flen[0])].float().cpu() for k in self.teacher.layers]


def teacher_encoder(spec: str, device="cpu") -> TeacherEncoder:
    """``SPEC.toml`` (one teacher) or ``SPEC.toml:NAME`` -> that teacher, loaded, as an encoder;
    SpecError / TeacherError naming what is wrong."""
    from pathlib import Path

    from .errors import SpecError
    from .spec import load_teacher_specs

    path, name = spec, None
    if not Path(spec).is_file() and ":" in spec:
        path, name = spec.rsplit(":", 1)
    specs = load_teacher_specs(path)
    if name is None and len(specs) != 1:
        raise SpecError(
            f"{path} names {len(specs)} teachers ({', '.join(s.name for s in specs)}): "
            f"choose one with {path}:NAME"
        )
    chosen = [s for s in specs if name is None or s.name == name]
    if not chosen:
        raise SpecError(
            f"{path} has no teacher {name!r} (it has {', '.join(s.name for s in specs)})"
        )
    return TeacherEncoder(load_teacher(chosen[0], device))
