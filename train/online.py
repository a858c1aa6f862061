"""Online-teacher baseline: teachers run in the loop on the same segments the bank holds, then the
same crop is taken, so the targets equal the cached ones (up to the codec). For comparison only:
the point of the bank is never to do this.
"""

from __future__ import annotations

import torch

from audistill.shards.catalog import TeacherRecord


class OnlineTeachers:
    """Teachers with the extraction registry's interface (``extract(wave, lengths)``)."""

    def __init__(self, teachers: list):
        self.teachers = {t.name: t for t in teachers}

    @classmethod
    def from_spec_file(cls, path: str, device: str | torch.device = "cpu") -> OnlineTeachers:
        # imported lazily: only this mode needs teachers
        from audistill.extract.spec import load_teacher_specs
        from audistill.extract.teachers import load_teacher

        return cls([load_teacher(s, device) for s in load_teacher_specs(path)])

    def records(self) -> dict[str, TeacherRecord]:
        from .synth import record_of

        return {n: t.record() if hasattr(t, "record") else record_of(t, "float32") for n, t in self.teachers.items()}

    @staticmethod
    def covers(t, domain: str) -> bool:
        spec = getattr(t, "spec", None)
        doms = list(getattr(spec, "domains", None) or getattr(t, "domains", []) or [])
        return not doms or domain in doms

    @torch.no_grad()
    def fill(self, batch: dict) -> None:
        """Put ``targets`` / ``target_lengths`` / ``present`` into a full-audio batch (see data.py)."""
        wave, lengths = batch["full_wave"], batch["full_lengths"]  # (B, N), (B,)
        starts, nums = batch["crop_start"].tolist(), batch["lengths"].tolist()
        device = batch["wave"].device
        for name, t in self.teachers.items():
            feats, fl = t.extract(wave, lengths)  # {layer: (B, T, D)}, (B,)
            hop = 16000 / t.frame_rate
            f0 = [min(int(fl[b]), int(round(starts[b] / hop))) for b in range(len(starts))]
            nf = [max(0, min(int(round(nums[b] / hop)), int(fl[b]) - f0[b])) for b in range(len(starts))]
            present = torch.tensor([self.covers(t, d) for d in batch["domains"]])
            out = {}
            for layer, z in feats.items():
                y = z.new_zeros(z.shape[0], max(1, max(nf)), z.shape[2]).float()  # (B, T, D)
                for b in range(z.shape[0]):
                    if present[b]:
                        y[b, : nf[b]] = z[b, f0[b]: f0[b] + nf[b]].float()
                out[layer] = y.to(device)
            batch["targets"][name] = out
            batch["target_lengths"][name] = torch.tensor(nf, device=device) * present.to(device)
            batch["present"][name] = present
