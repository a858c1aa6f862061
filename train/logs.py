"""Run logs: one JSON object per line in ``log.jsonl`` plus TensorBoard scalars."""

from __future__ import annotations

import json
import time
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.f = open(run_dir / "log.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))

    def write(self, kind: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.f.close()
            if self.tb is not None:
                self.tb.close()


def read_log(run_dir: Path, kind: str = "train") -> list[dict]:
    p = Path(run_dir) / "log.jsonl"
    return (
        [r for r in map(json.loads, p.read_text().splitlines()) if r["kind"] == kind]
        if p.exists()
        else []
    )
