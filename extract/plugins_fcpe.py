"""FCPE (torchfcpe's bundled conformer pitch estimator) as a plugin teacher (extra ``fcpe``).

Weights ship inside the ``torchfcpe`` wheel. Input: 16 kHz audio -> 128-bin log-mel at hop 160
(100 Hz, ``n // 160 + 1`` frames). Hidden states: 0 = the input conv stack's output, 1..6 = the
six conformer layers; 512 dims. The input stack's GroupNorm normalizes over time (padding
included), so batches are formed of equal lengths only (``pad_invariant = False``).
"""

from __future__ import annotations

from importlib.metadata import version

from audistill.shards.segments import SAMPLE_RATE

from .spec import TeacherSpec
from .teachers import Teacher


class FCPETeacher(Teacher):
    def __init__(self, spec: TeacherSpec, device):
        from torchfcpe import spawn_bundled_infer_model

        infer = spawn_bundled_infer_model(device=str(device))
        self.wav2mel, net = infer.wav2mel, infer.model
        self.hop = int(infer.get_hop_size())
        super()._setup(
            spec,
            device,
            net.to(device).eval(),
            SAMPLE_RATE / self.hop,
            net.norm.normalized_shape[0],
            len(net.net.encoder_layers) + 1,
            {"model": "fcpe_c_v001", "mel_hop": self.hop},
        )
        self.revision = spec.revision or f"torchfcpe=={version('torchfcpe')}"
        self.pad_invariant = False

    def _native_frames(self, num_samples_16k: int) -> int:
        return num_samples_16k // self.hop + 1

    def _forward(self, wave, lengths):
        mel = self.wav2mel(wave[:, :, None], SAMPLE_RATE)  # (B, T, 128)
        x = self.model.input_stack(mel.transpose(1, 2)).transpose(1, 2)  # (B, T, 512)
        hs = [x]
        for layer in self.model.net.encoder_layers:
            x = layer(x, None)
            hs.append(x)
        return {k: hs[k] for k in self.layers}


def load_fcpe(spec: TeacherSpec, device="cpu") -> Teacher:
    return FCPETeacher(spec, device)


def _describe(spec: TeacherSpec) -> dict:
    return {"frame_rate": 100.0, "dim": 512, "num_layers": 7}


load_fcpe.describe = _describe  # type: ignore[attr-defined]
