"""The GE2E speaker-encoder plugin: Resemblyzer's network and input, every layer exposed, batched =
one at a time, clear errors. A checkpoint of random weights in Resemblyzer's format stands in for
the packaged one (``test_real_teachers.py`` loads the real wheel when it is installed)."""

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from audistill.extract import plugins_ge2e
from audistill.extract.errors import TeacherError
from audistill.extract.plugins_ge2e import GE2E
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher, plugin_names

from .through_bank import check_batched_equals_single
from .tiny_models import make_tiny_ge2e


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_ge2e(tmp_path_factory.mktemp("ge2e") / "encoder.pt")


def spec(source, layers="all") -> TeacherSpec:
    return TeacherSpec(name="spk", source=str(source), kind="ge2e", layers=layers, codec="float32")


def voices(lengths=(16000, 12345, 9000)):
    t = torch.arange(max(lengths)) / 16000
    g = torch.Generator().manual_seed(0)
    x = torch.stack(
        [
            0.2 * torch.sin(2 * math.pi * f * t) * (1 + torch.sin(2 * math.pi * 3 * t))
            + 0.01 * torch.randn(len(t), generator=g)
            for f in (110.0, 220.0, 180.0)
        ]
    )
    n = torch.tensor(lengths)
    return x * (torch.arange(x.shape[1])[None] < n[:, None]), n


def test_every_layer_is_the_three_layer_lstm_split(ckpt):
    assert "ge2e" in plugin_names()
    t = load_teacher(spec(ckpt))
    assert (t.dim, t.num_layers, t.layers, t.frame_rate, t.pad_invariant) == (
        256,
        4,
        [0, 1, 2, 3],
        100.0,
        True,
    )
    wave, n = voices()
    feats, flen = t.extract(wave, n)
    assert flen.tolist() == [k // 160 + 1 for k in n.tolist()]

    state = torch.load(ckpt, weights_only=True)["model_state"]
    lstm, linear = nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
    lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
    linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
    with torch.no_grad():
        mel = t.model.mel(wave, n)
        top, _ = lstm(mel)
        first = nn.LSTM(40, 256, 1, batch_first=True)
        first.load_state_dict({f"{p}_l0": state[f"lstm.{p}_l0"] for p in _PARAMS})
        h1, _ = first(mel)
        proj = torch.relu(linear(top))
    torch.testing.assert_close(feats[0], h1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats[2], top, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats[3], proj, atol=1e-5, rtol=1e-4)
    rec = t.record()
    assert rec.extra["layer_semantics"].startswith("0..2 = LSTM layers")
    assert len(rec.fingerprint) == 64


_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def test_the_mel_is_librosas_after_resemblyzers_volume_rule():
    librosa = pytest.importorskip("librosa")
    net = GE2E()
    x = (np.random.RandomState(1).randn(12345) * 0.003).astype(np.float32)  # quieter than -30 dBFS
    mel = net.mel(torch.from_numpy(x)[None], torch.tensor([len(x)]))[0].numpy()
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    raised = x * (10 ** (-30 / 20) / rms)
    ref = librosa.feature.melspectrogram(y=raised, sr=16000, n_fft=400, hop_length=160, n_mels=40)
    assert mel.shape == ref.T.shape == (12345 // 160 + 1, 40)
    np.testing.assert_allclose(mel, ref.T, atol=1e-5 * ref.max(), rtol=1e-3)


def test_volume_is_raised_never_lowered():
    net = GE2E()
    x = torch.from_numpy((np.random.RandomState(2).randn(1, 8000) * 0.3).astype(np.float32))
    n = torch.tensor([8000])
    # quieter than -30 dBFS: raised to it, so any two quiet levels give one mel
    torch.testing.assert_close(net.mel(x * 0.01, n), net.mel(x * 0.03, n), rtol=1e-4, atol=1e-9)
    # louder (0.3 rms, about -10 dBFS): left alone, so twice the wave is four times the power
    torch.testing.assert_close(net.mel(2 * x, n), 4 * net.mel(x, n), rtol=1e-4, atol=1e-6)
    # digital silence stays finite
    assert torch.isfinite(net.mel(torch.zeros(1, 8000), n)).all()


def test_batched_through_a_bank_equals_one_at_a_time(ckpt, tmp_path):
    t = load_teacher(spec(ckpt, layers=[1, 3]))
    parts, s = check_batched_equals_single(t, *voices(), tmp_path, atol=1e-4)
    assert s.failed == 0
    assert all(sorted(got) == [1, 3] for got in parts)


def test_a_missing_or_foreign_checkpoint_is_named(tmp_path, monkeypatch):
    with pytest.raises(TeacherError, match="nowhere.pt.*not found"):
        load_teacher(spec(tmp_path / "nowhere.pt"))
    other = tmp_path / "other.pt"
    torch.save({"model_state": {"conv.weight": torch.zeros(3)}}, other)
    with pytest.raises(TeacherError, match="other.pt.*not a GE2E checkpoint"):
        load_teacher(spec(other))
    torch.save({"weights": 1}, other)
    with pytest.raises(TeacherError, match="other.pt.*not a GE2E checkpoint"):
        load_teacher(spec(other))
    monkeypatch.setattr(plugins_ge2e, "packaged_weights", lambda: None)
    with pytest.raises(TeacherError, match=r"resemblyzer is not installed.*audistill\[ge2e\]"):
        load_teacher(spec("resemblyzer"))


@pytest.mark.skipif(
    importlib.util.find_spec("resemblyzer") is None, reason="resemblyzer not installed"
)
def test_the_packaged_weights_load_and_tell_two_voices_apart():
    """The wheel's encoder: the utterance embedding (L2-normed projection at the last frame) of
    a voice is nearer another utterance of that voice than an utterance of a different one."""
    t = load_teacher(spec("resemblyzer"))
    assert t.revision == "resemblyzer==0.1.4"
    g = torch.Generator().manual_seed(3)

    def voice(f0: float, formant: float, seconds: float = 1.6) -> torch.Tensor:
        t_ = torch.arange(int(seconds * 16000)) / 16000
        harmonics = sum(
            torch.sin(2 * math.pi * k * f0 * t_ + float(torch.rand(1, generator=g)) * 6)
            * math.exp(-(((k * f0 - formant) / 400) ** 2))
            for k in range(1, 30)
        )
        return 0.1 * harmonics + 0.002 * torch.randn(len(t_), generator=g)

    waves = [voice(110, 700), voice(112, 720), voice(240, 2200), voice(236, 2150)]
    x = torch.stack(waves)
    feats, _ = t.extract(x, torch.full((4,), x.shape[1]))
    e = torch.nn.functional.normalize(feats[3][:, -1], dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]
    assert sim[2, 3] > sim[2, 0] and sim[2, 3] > sim[2, 1]


def test_weights_in_bfloat16_keep_the_mel_in_float32(ckpt):
    """``precision = "weights"`` casts the network (and its buffers) to bfloat16: the mel is still
    computed in float32 and the LSTM layers run in bfloat16, close to the float32 teacher."""
    full = load_teacher(spec(ckpt))
    half = load_teacher(
        TeacherSpec(
            name="spk",
            source=str(ckpt),
            kind="ge2e",
            layers="all",
            codec="float32",
            dtype="bf16",
            precision="weights",
        )
    )
    wave, n = voices()
    a, _ = full.extract(wave, n)
    b, _ = half.extract(wave, n)
    assert b[3].dtype == torch.bfloat16
    torch.testing.assert_close(b[3].float(), a[3], atol=0.05, rtol=0.05)
