"""Exported students: ``student.safetensors`` + ``config.json``, and the loader other code uses.

``load_student(path)`` returns a :class:`StudentEncoder`: ``num_layers``, ``frame_rate``,
``layers(wave) -> [ (T, D) ] * num_layers`` (hidden state 0 = input of the first block), and
batched ``forward(wave (B, N), lengths)``. ``random_student(size, seed)`` is the random-init
baseline with the same interface.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from audistill.shards.segments import SAMPLE_RATE

from .checkpoint import load_model_tensors, read_state
from .errors import CheckpointError
from .model import Student, StudentConfig
from .sizes import depth_upscale, student_config, upscale_layers

FORMAT = "audistill-student"


class StudentEncoder:
    def __init__(self, model: Student, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @property
    def num_layers(self) -> int:
        return self.model.num_layers

    @property
    def frame_rate(self) -> float:
        return self.model.cfg.frame_rate

    @property
    def dim(self) -> int:
        return self.model.cfg.dim

    @torch.no_grad()
    def forward(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """(B, N) float 16 kHz -> num_layers tensors (B, T, D) on the encoder's device."""
        return self.model(
            wave.to(self.device).float(), None if lengths is None else lengths.to(self.device)
        )

    def layers(self, wave: torch.Tensor | np.ndarray) -> list[torch.Tensor]:
        """(N,) float 16 kHz -> num_layers tensors (T, D) on the CPU."""
        w = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(1, -1)
        if w.shape[1] < self.model.cfg.hop:
            w = torch.nn.functional.pad(w, (0, self.model.cfg.hop - w.shape[1]))
        return [h[0].float().cpu() for h in self.forward(w)]

    def layers_of_file(self, path: str) -> list[torch.Tensor]:
        """Per-layer features of an audio file (decoded with soundfile, mixed to mono, 16 kHz)."""
        import soundfile as sf

        x, sr = sf.read(path, dtype="float32", always_2d=True)
        w = torch.from_numpy(x.mean(1))
        if sr != SAMPLE_RATE:
            import torchaudio

            w = torchaudio.functional.resample(w, sr, SAMPLE_RATE)
        return self.layers(w)


def student_state(model_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's weights out of a training checkpoint (keys 'student.*')."""
    return {k[len("student.") :]: v for k, v in model_tensors.items() if k.startswith("student.")}


def student_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Student tensors of an exported folder or a training checkpoint folder."""
    p = Path(path)
    if (p / "student.safetensors").exists():
        return load_file(str(p / "student.safetensors"))
    return student_state(load_model_tensors(p))


def student_config_of(path: str | Path) -> StudentConfig:
    p = Path(path)
    if (p / "config.json").exists():
        return StudentConfig.from_json(json.loads((p / "config.json").read_text())["student"])
    return StudentConfig.from_json(read_state(p)["student"])


def upscale(src: str | Path, out: str | Path, keep: int = 24) -> Path:
    """Depth up-scaling (XLarge -> XXLarge): an exported student of ``2 * keep`` blocks made of
    the first and the last ``keep`` blocks of ``src`` (a checkpoint or exported folder)."""
    cfg = student_config_of(src)
    tensors = depth_upscale(student_weights(src), cfg.depth, keep)
    new = StudentConfig.from_json({**cfg.to_json(), "depth": 2 * keep})
    return write_student(
        out, new, tensors, {"upscaled_from": str(src), "blocks": upscale_layers(cfg.depth, keep)}
    )


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write ``out/student.safetensors`` and ``out/config.json`` from a training checkpoint."""
    state = read_state(Path(ckpt))
    tensors = student_state(load_model_tensors(Path(ckpt)))
    if not tensors:
        raise CheckpointError(f"{ckpt} holds no student weights")
    return write_student(
        out,
        StudentConfig.from_json(state["student"]),
        tensors,
        {
            "checkpoint": str(ckpt),
            "step": state["step"],
            "run_config": state["config"],
            "targets": state.get("targets", []),
        },
    )


def write_student(
    out: str | Path, cfg: StudentConfig, tensors: dict[str, torch.Tensor], meta: dict | None = None
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "student.safetensors"))
    doc = {
        "format": FORMAT,
        "version": 1,
        "student": cfg.to_json(),
        "frame_rate": cfg.frame_rate,
        **(meta or {}),
    }
    (out / "config.json").write_text(json.dumps(doc, indent=1))
    return out


def load_student(path: str | Path, device: str = "cpu") -> StudentEncoder:
    """An exported student folder (or a training checkpoint folder) as a StudentEncoder."""
    p = Path(path)
    if (p / "student.safetensors").exists():
        doc = json.loads((p / "config.json").read_text())
        if doc.get("format") != FORMAT:
            raise CheckpointError(f"{p}/config.json is not an exported audistill student")
        cfg, tensors = (
            StudentConfig.from_json(doc["student"]),
            load_file(str(p / "student.safetensors")),
        )
    else:
        state = read_state(p)
        cfg, tensors = (
            StudentConfig.from_json(state["student"]),
            student_state(load_model_tensors(p)),
        )
    model = Student(cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("mel.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{p}: weights do not fit the student (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]})"
        )
    return StudentEncoder(model, device)


def random_student(size: str = "base", seed: int = 0, device: str = "cpu") -> StudentEncoder:
    torch.manual_seed(seed)
    return StudentEncoder(Student(student_config(size)), device)
