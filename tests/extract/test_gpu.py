"""GPU checks (``-m gpu``): batched bf16 extraction on CUDA agrees with one-at-a-time and with CPU."""

import numpy as np
import pytest
import torch

from audistill.extract.pipeline import _run_teacher
from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher
from audistill.shards.reader import BankReader

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-3), ("bf16", 0.15)])
def test_cuda_batched_equals_single(tiny_dir, dtype, tol):
    t = load_teacher(TeacherSpec(name="w", source=str(tiny_dir("wavlm")), layers="all", dtype=dtype,
                                 codec="float32"), "cuda")
    lengths = torch.tensor([16000, 23456, 8000])
    wave = torch.randn(3, 23456, generator=torch.Generator().manual_seed(0)) * 0.1
    wave = wave * (torch.arange(23456)[None] < lengths[:, None])
    parts, _ = _run_teacher(t, t.spec.make_codec(), {}, wave.cuda(), lengths, [0, 1, 2])
    for b in range(3):
        feats, flen = t.extract(wave[b:b + 1, : lengths[b]].cuda(), lengths[b:b + 1])
        for layer in t.layers:
            ref = feats[layer][0, : int(flen[0])].float().cpu().numpy()
            np.testing.assert_allclose(parts[b][layer]["x"], ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("writer_kind", ["thread", "process"])
def test_cuda_bank_matches_cpu_bank(tiny_dir, corpus, tmp_path, writer_kind):
    """Pinned staging + async copies (Encoded), handed to writer threads (Rows) or processes
    (shared memory), give the CPU run's bank."""
    spec = TeacherSpec(name="w", source=str(tiny_dir("wavlm")), layers=[1, 3], dtype="fp32", codec="float32")
    cfg = dict(max_seconds=2.0, shard_seconds=5.0, loader_workers=2)
    extract([str(corpus)], [spec], str(tmp_path / "gpu"), ExtractConfig(device="cuda", writer_kind=writer_kind, **cfg))
    extract([str(corpus)], [spec], str(tmp_path / "cpu"), ExtractConfig(device="cpu", **cfg))
    g = {sd.segment.id: sd.features for sd in BankReader(str(tmp_path / "gpu"))}
    c = {sd.segment.id: sd.features for sd in BankReader(str(tmp_path / "cpu"))}
    assert g.keys() == c.keys() and len(g) > 5
    for k in g:
        for layer in (1, 3):
            np.testing.assert_allclose(g[k]["w"][layer], c[k]["w"][layer], atol=1e-2, rtol=1e-2)  # cuDNN / TF32 vs CPU


@pytest.mark.parametrize("kind", ["whisper", "ast"])
def test_cuda_spectrogram_teachers_equal_cpu(tiny_dir, kind):
    """Whisper's log-mel and AST's fbank run on the device (no host round trip, even under bf16
    autocast they are float32) and give the CPU features."""
    spec = TeacherSpec(name=kind, source=str(tiny_dir(kind)), layers="all", dtype="bf16", codec="float32")
    gpu, cpu = load_teacher(spec, "cuda"), load_teacher(spec, "cpu")
    lengths = torch.tensor([16000, 23456, 8000])
    wave = torch.randn(3, 23456, generator=torch.Generator().manual_seed(0)) * 0.1
    wave = wave * (torch.arange(23456)[None] < lengths[:, None])
    with gpu.autocast():
        fg = gpu.log_mel(wave.cuda()) if kind == "whisper" else gpu.fbank(wave.cuda(), lengths)
    fc = cpu.log_mel(wave) if kind == "whisper" else cpu.fbank(wave, lengths)
    assert fg.dtype == torch.float32
    np.testing.assert_allclose(fg.cpu().numpy(), fc.numpy(), atol=1e-3, rtol=1e-3)
    feats, flen = gpu.extract(wave.cuda(), lengths)
    ref, rflen = cpu.extract(wave, lengths)
    assert flen.tolist() == rflen.tolist()
    for layer in gpu.layers:
        np.testing.assert_allclose(feats[layer].float().cpu().numpy(), ref[layer].numpy(), atol=0.15, rtol=0.15)
