import math

import pytest
import torch

from audistill.extract.errors import TeacherError
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher

from .through_bank import bank_features, exact_waves

LENGTHS = [16000, 23456, 8000, 23456]


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(LENGTHS)
    wave = torch.randn(len(LENGTHS), max(LENGTHS), generator=g) * 0.1  # (B, N)
    return wave * (torch.arange(wave.shape[1])[None] < lengths[:, None]), lengths


def _teacher(tiny_dir, kind, **kw):
    return load_teacher(TeacherSpec(name=kind, source=str(tiny_dir(kind)), **kw))


@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2", "hubert", "data2vec", "whisper", "ast"])
def test_batched_equals_one_at_a_time(tiny_dir, kind, tmp_path):
    """Through the pipeline's grouping (equal lengths for teachers that are not padding-invariant),
    into a bank and back."""
    t = _teacher(tiny_dir, kind, layers="all", codec="float32")
    waves = exact_waves(*_batch())
    batched, s = bank_features(t, waves, tmp_path)
    assert s.padded_samples == len(LENGTHS) * max(LENGTHS)  # one batch, padded
    for b, n in enumerate(LENGTHS):
        feats, flen = t.extract(torch.from_numpy(waves[b])[None], torch.tensor([n]))
        assert int(flen[0]) == t.num_frames(n) == batched[b][t.layers[0]].shape[0]
        for layer in t.layers:
            torch.testing.assert_close(torch.from_numpy(batched[b][layer]), feats[layer][0, : int(flen[0])],
                                       atol=2e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # transformers' own eager path
def test_wavlm_fused_attention_equals_transformers(tiny_dir):
    """The WavLM teacher's attention without weights (fused SDPA) gives transformers' eager
    attention's features, padding masks included; every layer has it."""
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    t = _teacher(tiny_dir, "wavlm", layers="all")
    mods = [m for m in t.model.modules() if isinstance(m, WavLMAttention)]
    assert len(mods) == t.num_layers - 1 and all("torch_multi_head_self_attention" in vars(m) for m in mods)
    wave, lengths = _batch()
    fused, flen = t.extract(wave, lengths)
    for m in mods:
        del m.torch_multi_head_self_attention  # back to transformers' own method
    eager, flen2 = t.extract(wave, lengths)
    assert flen.tolist() == flen2.tolist()
    for layer in t.layers:
        for b, n in enumerate(flen.tolist()):
            torch.testing.assert_close(fused[layer][b, :n], eager[layer][b, :n], atol=1e-5, rtol=1e-5)


def test_padding_invariance_flags(tiny_dir):
    assert _teacher(tiny_dir, "wavlm").pad_invariant
    assert not _teacher(tiny_dir, "hubert").pad_invariant  # group-norm feature encoder
    assert not _teacher(tiny_dir, "data2vec").pad_invariant


def test_wav2vec2_family_frames_and_layers(tiny_dir):
    t = _teacher(tiny_dir, "wavlm", layers="sparse:2")
    assert (t.num_layers, t.layers, t.frame_rate, t.dim) == (4, [1, 3], 50.0, 32)
    assert t.num_frames(32000) == 99  # as the real models: 2 s -> 99 frames
    feats, flen = t.extract(*_batch())
    assert sorted(feats) == [1, 3] and flen.tolist() == [t.num_frames(n) for n in LENGTHS]


def test_whisper_keeps_only_frames_covering_real_audio(tiny_dir):
    t = _teacher(tiny_dir, "whisper", layers="all")
    assert (t.frame_rate, t.num_layers) == (50.0, 3)
    feats, flen = t.extract(*_batch())
    assert flen.tolist() == [math.ceil(n / 320) for n in LENGTHS] == [50, 74, 25, 74]
    assert feats[2].shape[1] == 74  # not 1500
    full = t.model(t.fe([_batch()[0][2, :8000].numpy()], sampling_rate=16000, return_tensors="pt")["input_features"],
                   output_hidden_states=True).hidden_states[2]
    assert full.shape[1] == 1500
    torch.testing.assert_close(feats[2][2, :25], full[0, :25], atol=1e-5, rtol=1e-5)


def test_whisper_log_mel_on_the_device_equals_the_feature_extractor(tiny_dir):
    """The batched device log-mel is WhisperFeatureExtractor's, item by item (its own 30 s padding
    and per-item max - 8 floor), for items shorter than, and cut at, the window."""
    t = _teacher(tiny_dir, "whisper")
    wave, lengths = _batch(seed=3)
    long = torch.randn(1, t.window + 5000, generator=torch.Generator().manual_seed(1)) * 0.1  # cut at 30 s
    wave = torch.cat([torch.nn.functional.pad(wave, (0, long.shape[1] - wave.shape[1])), long])
    lengths = torch.cat([lengths, torch.tensor([long.shape[1]])])
    ours = t.log_mel(wave * (torch.arange(wave.shape[1])[None] < lengths[:, None]))
    ref = t.fe([wave[b, : int(n)].numpy() for b, n in enumerate(lengths)], sampling_rate=16000,
               return_tensors="pt")["input_features"]
    assert ours.shape == ref.shape == (5, 80, 3000)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)  # bit-identical on the CPU here


def test_ast_fbank_on_the_device_equals_the_feature_extractor(tiny_dir):
    """The batched device Kaldi fbank is ASTFeatureExtractor's (torchaudio's kaldi.fbank per item,
    zero-padded to max_length, normalized), also for an item longer than max_length frames."""
    t = _teacher(tiny_dir, "ast")
    wave, lengths = _batch(seed=4)
    n_long = 160 * (t.max_len + 40) + 400  # > max_length frames: cut
    long = torch.randn(1, n_long, generator=torch.Generator().manual_seed(2)) * 0.1
    wave = torch.cat([torch.nn.functional.pad(wave, (0, n_long - wave.shape[1])), long])
    lengths = torch.cat([lengths, torch.tensor([n_long])])
    ours = t.fbank(wave * (torch.arange(wave.shape[1])[None] < lengths[:, None]), lengths)
    ref = t.fe([wave[b, : int(n)].numpy() for b, n in enumerate(lengths)], sampling_rate=16000,
               return_tensors="pt")["input_values"]
    assert ours.shape == ref.shape == (5, t.max_len, 128)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)  # bit-identical on the CPU here


def test_ast_mean_over_frequency_patches(tiny_dir):
    t = _teacher(tiny_dir, "ast", layers=[2])
    assert t.frame_rate == 10.0 and (t.f_dim, t.t_dim) == (12, 101)
    wave, lengths = _batch()
    feats, flen = t.extract(wave, lengths)
    x = t.fe([wave[0, :16000].numpy()], sampling_rate=16000, return_tensors="pt")["input_values"]
    tokens = t.model(x, output_hidden_states=True).hidden_states[2][0]  # (2 + 12*101, D)
    col = torch.stack([tokens[2 + f * 101 + 3] for f in range(12)]).mean(0)  # column t = 3
    torch.testing.assert_close(feats[2][0, 3], col, atol=1e-5, rtol=1e-5)
    assert flen.tolist() == [9, 13, 4, 13]  # columns whose 16-frame patch starts inside the audio


def test_record_identity_and_fingerprint(tiny_dir, tmp_path):
    from .tiny_models import make_tiny

    a = _teacher(tiny_dir, "wavlm", layers="sparse:2", codec="bfloat16", domains=("speech",),
                 home_domain="speech").record()
    assert (a.layers, a.num_layers, a.dim, a.frame_rate, a.domains, a.home_domain) == ([1, 3], 4, 32, 50.0,
                                                                                     ["speech"], "speech")
    assert a.codec["name"] == "bfloat16" and len(a.fingerprint) == 64
    b = _teacher(tiny_dir, "wavlm").record()
    assert a.fingerprint == b.fingerprint
    other = make_tiny("wavlm", tmp_path / "w2", seed=1)
    c = load_teacher(TeacherSpec(name="wavlm", source=str(other))).record()
    assert c.fingerprint != a.fingerprint


def test_50hz_frame_policy(tiny_dir):
    t = _teacher(tiny_dir, "ast", layers=[1], frame_policy="50hz")
    feats, flen = t.extract(*_batch())
    assert t.frame_rate == 50.0 and flen.tolist() == [50, 73, 25, 73] and feats[1].shape[1] == 73


def test_load_errors(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher(TeacherSpec(name="x", source=str(tmp_path / "nothing")))
    with pytest.raises(TeacherError, match="no plugin"):
        load_teacher(TeacherSpec(name="x", source="y", kind="no-such-plugin"))


@pytest.mark.parametrize("kind", ["whisper", "ast"])
def test_spectrogram_teachers_refuse_a_feature_extractor_at_another_rate(tiny_dir, tmp_path, kind):
    """Their features are computed from 16 kHz audio on the device, so an extractor for another
    rate is refused at load time (transformers would refuse it at the first call)."""
    import json
    import shutil

    d = tmp_path / kind
    shutil.copytree(tiny_dir(kind), d)
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    (d / "preprocessor_config.json").write_text(json.dumps({**cfg, "sampling_rate": 24000}))
    with pytest.raises(TeacherError, match="expects 24000 Hz"):
        load_teacher(TeacherSpec(name=kind, source=str(d)))


def test_oom_splits_the_batch(tiny_dir, monkeypatch, tmp_path):
    t = _teacher(tiny_dir, "wavlm", layers=[3], codec="float32")
    real = t.extract
    calls = []

    def small_only(wave, lengths):
        calls.append(len(lengths))
        if len(lengths) > 1:
            raise torch.OutOfMemoryError("fake")
        return real(wave, lengths)

    monkeypatch.setattr(t, "extract", small_only)
    feats, s = bank_features(t, exact_waves(*_batch()), tmp_path)
    assert calls[0] == 4 and all(f is not None for f in feats) and s.failed == 0
    assert s.teachers[t.name].frames == sum(t.num_frames(n) for n in LENGTHS)


def test_teachers_loaded_in_threads_leave_transformers_as_they_found_it(tiny_dir):
    """from_pretrained swaps PreTrainedModel.tie_weights (and torch's init functions) for the load;
    two loads at once could leave the no-op in place for good, untying every later model."""
    import threading

    import torch.nn.init
    from transformers import PreTrainedModel

    from audistill.extract.spec import TeacherSpec
    from audistill.extract.teachers import load_teacher

    tie, init = PreTrainedModel.tie_weights, torch.nn.init.normal_
    spec = TeacherSpec(name="w", source=str(tiny_dir("wavlm")), layers=[1])
    threads = [threading.Thread(target=load_teacher, args=(spec, "cpu")) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert PreTrainedModel.tie_weights is tie and torch.nn.init.normal_ is init
