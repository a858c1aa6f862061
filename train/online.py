"""Online-teacher baseline: teachers run in the loop on the same segments the bank holds, then the
same crop is taken, so the targets equal the cached ones (up to the codec). For comparison only:
the point of the bank is never to do this.
"""

from __future__ import annotations

import torch

from audistill.shards.catalog import TeacherRecord
from audistill.shards.segments import SAMPLE_RATE


class OnlineTeachers:
    """Teachers with the extraction registry's interface (``record()``, ``extract(wave,
    lengths)``)."""

    def __init__(self, teachers: list):
        self.teachers = {t.name: t for t in teachers}

    @classmethod
    def from_spec_file(cls, path: str, device: str | torch.device = "cpu") -> OnlineTeachers:
        # imported lazily: only this mode needs teachers
        from audistill.extract.spec import load_teacher_specs
        from audistill.extract.teachers import load_teacher

        return cls([load_teacher(s, device) for s in load_teacher_specs(path)])

    def records(self) -> dict[str, TeacherRecord]:
        return {n: t.record() for n, t in self.teachers.items()}

    @staticmethod
    def covers(t, domain: str) -> bool:
        spec = getattr(t, "spec", None)
        doms = list(getattr(spec, "domains", None) or getattr(t, "domains", []) or [])
        return not doms or domain in doms

    @staticmethod
    def groups(t, lengths: list[int], present: list[bool]) -> list[list[int]]:
        """Batch items to run together: only covered items; items of equal length together for a
        teacher whose output depends on padding (as extraction batches it), else all at once."""
        idx = [b for b in range(len(lengths)) if present[b]]
        if getattr(t, "pad_invariant", True):
            return [idx] if idx else []
        by_len: dict[int, list[int]] = {}
        for b in idx:
            by_len.setdefault(lengths[b], []).append(b)
        return list(by_len.values())

    @torch.no_grad()
    def fill(self, batch: dict) -> None:
        """Put ``targets`` / ``target_lengths`` / ``present`` into a full-audio batch (see
        data.py)."""
        wave, lengths = batch["full_wave"], batch["full_lengths"]  # (B, N), (B,)
        starts, nums = batch["crop_start"].tolist(), batch["lengths"].tolist()
        device = batch["wave"].device
        n_items = len(starts)
        for name, t in self.teachers.items():
            hop = SAMPLE_RATE / t.frame_rate
            present = torch.tensor([self.covers(t, d) for d in batch["domains"]])
            f0, nf = [0] * n_items, [0] * n_items
            crops: dict[int, dict[int, torch.Tensor]] = {}
            for group in self.groups(t, lengths.tolist(), present.tolist()):
                longest = int(lengths[group].max())
                feats, fl = t.extract(
                    wave[group, :longest], lengths[group]
                )  # {layer: (G, T, D)}, (G,)
                for g, b in enumerate(group):
                    f0[b] = min(int(fl[g]), int(round(starts[b] / hop)))
                    nf[b] = max(0, min(int(round(nums[b] / hop)), int(fl[g]) - f0[b]))
                    crops[b] = {
                        layer: z[g, f0[b] : f0[b] + nf[b]].float() for layer, z in feats.items()
                    }
            out = {}
            for layer in t.layers:
                dim = next((c[layer].shape[-1] for c in crops.values()), t.dim)
                y = torch.zeros(n_items, max(1, max(nf)), dim)  # (B, T, D)
                for b, c in crops.items():
                    y[b, : nf[b]] = c[layer].cpu()
                out[layer] = y.to(device)
            batch["targets"][name] = out
            batch["target_lengths"][name] = torch.tensor(nf, device=device) * present.to(device)
            batch["present"][name] = present
