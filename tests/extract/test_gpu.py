"""GPU checks (``-m gpu``): batched bf16 extraction on CUDA agrees with one-at-a-time and with
CPU."""

import numpy as np
import pytest
import torch

from audistill.extract.run import ExtractConfig, extract
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher
from audistill.shards.reader import BankReader

from .through_bank import bank_features, exact_waves

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-3), ("bf16", 0.15)])
def test_cuda_batched_equals_single(tiny_dir, dtype, tol, tmp_path):
    t = load_teacher(
        TeacherSpec(
            name="w", source=str(tiny_dir("wavlm")), layers="all", dtype=dtype, codec="float32"
        ),
        "cuda",
    )
    lengths = torch.tensor([16000, 23456, 8000])
    wave = torch.randn(3, 23456, generator=torch.Generator().manual_seed(0)) * 0.1
    waves = exact_waves(wave, lengths)
    parts, _ = bank_features(t, waves, tmp_path)
    for b in range(3):
        feats, flen = t.extract(torch.from_numpy(waves[b])[None].cuda(), lengths[b : b + 1])
        for layer in t.layers:
            ref = feats[layer][0, : int(flen[0])].float().cpu().numpy()
            np.testing.assert_allclose(parts[b][layer], ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("writer_kind", ["thread", "process"])
def test_cuda_bank_matches_cpu_bank(tiny_dir, corpus, tmp_path, writer_kind):
    """Pinned staging + async copies (Encoded), handed to writer threads (Rows) or processes
    (shared memory), give the CPU run's bank."""
    spec = TeacherSpec(
        name="w", source=str(tiny_dir("wavlm")), layers=[1, 3], dtype="fp32", codec="float32"
    )
    cfg = dict(max_seconds=2.0, shard_seconds=5.0, loader_workers=2)
    extract(
        [str(corpus)],
        [spec],
        str(tmp_path / "gpu"),
        ExtractConfig(device="cuda", writer_kind=writer_kind, **cfg),
    )
    extract([str(corpus)], [spec], str(tmp_path / "cpu"), ExtractConfig(device="cpu", **cfg))
    g = {sd.segment.id: sd.features for sd in BankReader(str(tmp_path / "gpu"))}
    c = {sd.segment.id: sd.features for sd in BankReader(str(tmp_path / "cpu"))}
    assert g.keys() == c.keys() and len(g) > 5
    for k in g:
        for layer in (1, 3):
            np.testing.assert_allclose(
                g[k]["w"][layer], c[k]["w"][layer], atol=1e-2, rtol=1e-2
            )  # cuDNN / TF32 vs CPU


@pytest.mark.parametrize("kind", ["whisper", "ast"])
def test_cuda_spectrogram_teachers_equal_cpu(tiny_dir, kind):
    """Whisper's log-mel and AST's fbank run on the device (no host round trip, even under bf16
    autocast they are float32) and give the CPU features."""
    spec = TeacherSpec(
        name=kind, source=str(tiny_dir(kind)), layers="all", dtype="bf16", codec="float32"
    )
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
        np.testing.assert_allclose(
            feats[layer].float().cpu().numpy(), ref[layer].numpy(), atol=0.15, rtol=0.15
        )


def _fitted_state(codec, t, wave, lengths):
    """A fitted codec state on the device (int8-delta, mvq), from this batch's features."""
    from audistill.extract.encode import device_state

    if not codec.needs_fit:
        return {}
    feats, flen = t.extract(wave, lengths)
    out = {}
    for layer, x in feats.items():
        rows = torch.cat([x[b, : int(n)] for b, n in enumerate(flen)]).float().cpu().numpy()
        out[layer] = device_state(codec.fit(rows), "cuda")
    return out


@pytest.mark.parametrize(
    "kind,codec",
    [
        ("wavlm", "int8-delta"),
        ("wavlm", "float16"),
        ("wavlm", "mvq"),
        ("hubert", "int8-delta"),
        ("wav2vec2", "int8-delta"),
        ("data2vec", "float16"),
        ("whisper", "int8-delta"),
        ("ast", "float16"),
    ],
)
def test_launching_a_batch_never_syncs(tiny_dir, kind, codec):
    """The host must run ahead of the device: queueing a batch's forward, its encode and its copy
    to pinned host memory may not wait for the device (torch's sync debug mode raises on any
    synchronizing call: item(), nonzero, a pageable copy, ...). Collecting it afterwards gives the
    synchronous result."""
    from audistill.extract.pipeline import _collect, _launch_teacher

    t = load_teacher(
        TeacherSpec(name=kind, source=str(tiny_dir(kind)), layers="all", dtype="bf16", codec=codec),
        "cuda",
    )
    c = t.spec.make_codec()
    lengths = torch.tensor([16000, 23456, 8000, 23456])
    wave = torch.randn(4, 23456, generator=torch.Generator().manual_seed(0)) * 0.1
    wave = (wave * (torch.arange(23456)[None] < lengths[:, None])).cuda()
    states = _fitted_state(c, t, wave, lengths)
    pos = [0, 1, 2, 3]
    ref, _ = _collect(
        _launch_teacher(t, c, states, wave, lengths, pos), pos
    )  # warm-up: lazy inits may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        launched = _launch_teacher(t, c, states, wave, lengths, pos)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    parts, _ = _collect(launched, pos)
    for a, b in zip(parts, ref, strict=True):
        assert (a is None) == (b is None)
        for layer in a or {}:
            for k in a[layer]:
                np.testing.assert_array_equal(a[layer][k], b[layer][k])


@pytest.mark.parametrize("compile_mode", ["reduce-overhead"])
def test_compiled_teacher_with_cuda_graphs_in_the_pipeline(tiny_dir, compile_mode):
    """compile = reduce-overhead (CUDA graphs), bf16 weights, 1 s buckets: two batches launched
    before either is collected (the pipeline's depth) give the eager float32 features within bf16's
    tolerance - a replay does not overwrite the previous batch's outputs."""
    from audistill.extract.pipeline import _collect, _launch_teacher

    spec = dict(name="w", source=str(tiny_dir("wavlm")), layers="all", codec="float32")
    t = load_teacher(
        TeacherSpec(
            **spec, dtype="bf16", precision="weights", compile=compile_mode, bucket_seconds=1.0
        ),
        "cuda",
    )
    ref = load_teacher(TeacherSpec(**spec, dtype="fp32"), "cuda")
    c = t.spec.make_codec()
    g = torch.Generator().manual_seed(0)
    batches = []
    for lengths in ([16000, 23456, 8000, 23456], [12000, 9000, 15000, 4000]):
        lengths = torch.tensor(lengths)
        wave = torch.randn(4, int(lengths.max()), generator=g) * 0.1
        batches.append(
            ((wave * (torch.arange(wave.shape[1])[None] < lengths[:, None])).cuda(), lengths)
        )
    pos = [0, 1, 2, 3]
    for _ in range(3):  # compile, record, replay
        launched = [_launch_teacher(t, c, {}, w, ln, pos) for w, ln in batches]
        parts = [_collect(x, pos)[0] for x in launched]
    for (w, ln), got in zip(batches, parts, strict=True):
        want, _ = _collect(_launch_teacher(ref, c, {}, w, ln, pos), pos)
        for a, b in zip(got, want, strict=True):
            for layer in t.layers:
                x, y = (
                    torch.from_numpy(a[layer]["x"]).float(),
                    torch.from_numpy(b[layer]["x"]).float(),
                )
                assert x.shape == y.shape and float((x - y).norm() / y.norm()) < 0.03
