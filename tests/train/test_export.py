import json

import numpy as np
import soundfile as sf
import torch

from audistill.train.config import from_dict
from audistill.train.export import export, load_student, random_student
from audistill.train.loop import train

from .conftest import tiny_config


def test_export_and_load_student(tiny_bank, tmp_path):
    cfg = from_dict(
        tiny_config(
            tiny_bank, str(tmp_path / "r"), **{"optim.max_steps": 1, "optim.warmup_steps": 0}
        )
    )
    train(cfg)
    ckpt = sorted((cfg.run_dir / "checkpoints").glob("ckpt-*"))[-1]
    out = export(ckpt, tmp_path / "exported")
    doc = json.loads((out / "config.json").read_text())
    assert (
        doc["student"]["dim"] == 64
        and doc["frame_rate"] == 50.0
        and (out / "student.safetensors").exists()
    )
    enc = load_student(out)
    assert enc.num_layers == 3 and enc.frame_rate == 50.0
    wave = torch.from_numpy(
        np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    )
    feats = enc.layers(wave)
    assert len(feats) == 3 and all(f.shape == (50, 64) for f in feats)
    from_ckpt = load_student(ckpt).layers(wave)
    for a, b in zip(feats, from_ckpt, strict=True):
        torch.testing.assert_close(a, b)
    path = tmp_path / "a.wav"
    sf.write(path, wave.numpy(), 16000)
    torch.testing.assert_close(enc.layers_of_file(str(path))[-1], feats[-1], atol=1e-3, rtol=1e-3)
    rnd = random_student("tiny", seed=0).layers(wave)
    assert not torch.allclose(rnd[-1], feats[-1])
