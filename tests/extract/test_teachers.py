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
            torch.testing.assert_close(
                torch.from_numpy(batched[b][layer]),
                feats[layer][0, : int(flen[0])],
                atol=2e-4,
                rtol=1e-4,
            )


@pytest.mark.filterwarnings(
    "ignore:Support for mismatched key_padding_mask"
)  # transformers' own eager path
def test_wavlm_fused_attention_equals_transformers(tiny_dir):
    """The WavLM teacher's attention without weights (fused SDPA) gives transformers' eager
    attention's features, padding masks included; every layer has it."""
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    t = _teacher(tiny_dir, "wavlm", layers="all")
    mods = [m for m in t.model.modules() if isinstance(m, WavLMAttention)]
    assert len(mods) == t.num_layers - 1 and all(
        "torch_multi_head_self_attention" in vars(m) for m in mods
    )
    wave, lengths = _batch()
    fused, flen = t.extract(wave, lengths)
    for m in mods:
        del m.torch_multi_head_self_attention  # back to transformers' own method
    eager, flen2 = t.extract(wave, lengths)
    assert flen.tolist() == flen2.tolist()
    for layer in t.layers:
        for b, n in enumerate(flen.tolist()):
            torch.testing.assert_close(
                fused[layer][b, :n], eager[layer][b, :n], atol=1e-5, rtol=1e-5
            )


@pytest.mark.filterwarnings(
    "ignore:Support for mismatched key_padding_mask"
)  # transformers' own eager path
@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2", "data2vec"])
def test_sync_free_masks_equal_transformers_masking(tiny_dir, kind):
    """The teacher's model, its padding masks made without host syncs, gives the hidden states of
    the model as transformers loads it, on a padded batch (real frames; padded ones are zero in
    both)."""
    from transformers import AutoModel

    t = _teacher(tiny_dir, kind, layers="all")
    assert t.sync_free
    own = AutoModel.from_pretrained(str(tiny_dir(kind))).eval()
    wave, lengths = _batch()
    mask = (torch.arange(wave.shape[1])[None] < lengths[:, None]).long()  # (B, N)
    with torch.no_grad():
        ours = t.model(wave, attention_mask=mask, output_hidden_states=True).hidden_states
        ref = own(wave, attention_mask=mask, output_hidden_states=True).hidden_states
    frames = [t.num_frames(int(n)) for n in lengths]
    assert len(ours) == len(ref) == t.num_layers
    for a, b in zip(ours, ref, strict=True):
        for i, n in enumerate(frames):
            torch.testing.assert_close(a[i, :n], b[i, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2"])
def test_one_teacher_shared_by_threads(tiny_dir, kind):
    """Threads may share one loaded teacher (Dask workers run tasks in threads): padded batches of
    different sizes extracted at once give what they give one at a time (the masks handed to the
    encoder layers are per thread)."""
    import concurrent.futures

    t = _teacher(tiny_dir, kind, layers="all")
    wave, lengths = _batch()
    jobs = [(wave, lengths), (wave[1:, :20000], torch.tensor([20000, 8000, 12000]))]
    want = [t.extract(w, n)[0] for w, n in jobs]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda k: [t.extract(*jobs[k % 2])[0] for _ in range(15)], range(2)))
    for k, runs in enumerate(got):
        for feats in runs:
            for layer in t.layers:
                torch.testing.assert_close(feats[layer], want[k][layer], atol=1e-5, rtol=1e-5)


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
    full = t.model(
        t.fe([_batch()[0][2, :8000].numpy()], sampling_rate=16000, return_tensors="pt")[
            "input_features"
        ],
        output_hidden_states=True,
    ).hidden_states[2]
    assert full.shape[1] == 1500
    torch.testing.assert_close(feats[2][2, :25], full[0, :25], atol=1e-5, rtol=1e-5)


def test_whisper_log_mel_on_the_device_equals_the_feature_extractor(tiny_dir):
    """The batched device log-mel is WhisperFeatureExtractor's, item by item (its own 30 s padding
    and per-item max - 8 floor), for items shorter than, and cut at, the window."""
    t = _teacher(tiny_dir, "whisper")
    wave, lengths = _batch(seed=3)
    long = (
        torch.randn(1, t.window + 5000, generator=torch.Generator().manual_seed(1)) * 0.1
    )  # cut at 30 s
    wave = torch.cat([torch.nn.functional.pad(wave, (0, long.shape[1] - wave.shape[1])), long])
    lengths = torch.cat([lengths, torch.tensor([long.shape[1]])])
    ours = t.log_mel(wave * (torch.arange(wave.shape[1])[None] < lengths[:, None]))
    ref = t.fe(
        [wave[b, : int(n)].numpy() for b, n in enumerate(lengths)],
        sampling_rate=16000,
        return_tensors="pt",
    )["input_features"]
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
    ref = t.fe(
        [wave[b, : int(n)].numpy() for b, n in enumerate(lengths)],
        sampling_rate=16000,
        return_tensors="pt",
    )["input_values"]
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

    a = _teacher(
        tiny_dir,
        "wavlm",
        layers="sparse:2",
        codec="bfloat16",
        domains=("speech",),
        home_domain="speech",
    ).record()
    assert (a.layers, a.num_layers, a.dim, a.frame_rate, a.domains, a.home_domain) == (
        [1, 3],
        4,
        32,
        50.0,
        ["speech"],
        "speech",
    )
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


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _real_frames(feats, flen):
    return {k: torch.cat([v[b, :n] for b, n in enumerate(flen.tolist())]) for k, v in feats.items()}


def test_a_reduced_precision_conv_that_is_wrong_here_is_refused_at_load(tiny_dir, monkeypatch):
    """A convolution whose bfloat16 kernel is wrong on this machine (simulated: the kernel of one
    shape is off; seen for real on AMX CPUs, see check_reduced_precision_convs) is named at load
    instead of writing wrong features into a bank; float32 loads as before."""
    real = torch.nn.Conv1d._conv_forward

    def broken(self, x, w, b):
        y = real(self, x, w, b)
        return -y if w.dtype == torch.bfloat16 and self.groups > 1 else y

    monkeypatch.setattr(torch.nn.Conv1d, "_conv_forward", broken)
    with pytest.raises(TeacherError) as e:
        _teacher(tiny_dir, "hubert", layers="all", dtype="bf16", precision="weights")
    msg = str(e.value)
    assert "'hubert'" in msg and "'encoder.pos_conv_embed.conv'" in msg
    assert "bf16" in msg and "relative error 2.00" in msg and 'dtype = "fp32"' in msg
    assert "ONEDNN_MAX_CPU_ISA" in msg  # the CPU's workaround
    t = _teacher(tiny_dir, "hubert", layers="all", dtype="fp32", precision="weights")
    assert t.run_dtype == torch.float32


def test_the_reduced_precision_check_runs_each_distinct_conv_once_per_dtype(tiny_dir, monkeypatch):
    """Every distinct conv shape of a bf16 teacher is run in float32 and in bfloat16 (inputs long
    enough for its kernel, stride and dilation), and a sound kernel passes."""
    from audistill.extract.teachers import check_reduced_precision_convs

    t = _teacher(tiny_dir, "wavlm", layers="all", dtype="bf16", precision="weights")
    real, calls = torch.nn.Conv1d._conv_forward, []

    def counted(self, x, w, b):
        calls.append((id(self), w.dtype))
        return real(self, x, w, b)

    monkeypatch.setattr(torch.nn.Conv1d, "_conv_forward", counted)
    check_reduced_precision_convs(t)
    convs = {id(m) for m in t.model.modules() if isinstance(m, torch.nn.Conv1d)}
    assert len(convs) == 4  # the tiny feature encoder's 3 convs (all shapes differ) + pos conv
    want = {(i, d) for i in convs for d in (torch.float32, torch.bfloat16)}
    assert len(calls) == len(want) and set(calls) == want


def test_a_teacher_hit_by_the_amx_bf16_grouped_conv_bug_is_refused(tmp_path):
    """For real, where this machine has the bug (torch 2.11, AMX CPUs): a WavLM-shaped teacher with
    8 channels per positional-conv group loads in float32 and is refused in bfloat16."""
    import torch.nn.functional as F
    import transformers as tf

    x, w = torch.randn(1, 32, 60), torch.randn(32, 8, 16)
    want = F.conv1d(x, w, padding=8, groups=4)
    got = F.conv1d(x.bfloat16(), w.bfloat16(), padding=8, groups=4).float()
    if float((got - want).norm() / want.norm()) < 0.05:
        pytest.skip("this machine's bfloat16 grouped conv1d is right (no AMX bug to refuse)")
    torch.manual_seed(0)
    cfg = tf.HubertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="group",
        conv_dim=(32, 32, 32), conv_stride=(5, 4, 16), conv_kernel=(10, 8, 16),
    )  # fmt: skip
    tf.HubertModel(cfg).save_pretrained(tmp_path / "m")
    tf.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "m")
    spec = {"name": "g4", "source": str(tmp_path / "m"), "layers": "all"}
    load_teacher(TeacherSpec(**spec, dtype="fp32", precision="weights"))
    with pytest.raises(TeacherError, match="pos_conv_embed.conv.*wrong on this machine"):
        load_teacher(TeacherSpec(**spec, dtype="bf16", precision="weights"))


@pytest.mark.parametrize("kind", ["wavlm", "wav2vec2", "hubert", "whisper", "ast"])
def test_bf16_weights_stay_within_bf16_tolerance(tiny_dir, kind, tmp_path):
    """precision = "weights": the model in bfloat16 (no autocast; on the CPU too) gives the float32
    features to bfloat16's precision, through the pipeline's codec path too; the fingerprint
    still names the weights as loaded."""
    ref = _teacher(tiny_dir, kind, layers="all", codec="float32", dtype="fp32")
    t = _teacher(tiny_dir, kind, layers="all", codec="float32", dtype="bf16", precision="weights")
    assert t.run_dtype == torch.bfloat16 and next(t.model.parameters()).dtype == torch.bfloat16
    assert t.fingerprint() == ref.fingerprint() and t.record().extra["precision"] == "weights"
    wave, lengths = _batch()
    fr, flr = ref.extract(wave, lengths)
    fb, flb = t.extract(wave, lengths)
    assert flb.tolist() == flr.tolist()
    real_r, real_b = _real_frames(fr, flr), _real_frames(fb, flb)
    for layer in t.layers:
        assert real_b[layer].dtype == torch.bfloat16
        assert _rel_err(real_b[layer], real_r[layer]) < 0.03, layer  # bf16 keeps 8 bits of mantissa
    waves = exact_waves(wave, lengths)  # through the pipeline's codec path into a bank, read back
    got, _ = bank_features(t, waves, tmp_path / "bf16")
    want, _ = bank_features(ref, waves, tmp_path / "fp32")
    for g, w in zip(got, want, strict=True):
        for layer in t.layers:
            x, y = torch.from_numpy(g[layer]), torch.from_numpy(w[layer])
            assert x.shape == y.shape and _rel_err(x, y) < 0.03


@pytest.mark.parametrize("kind,padded", [("wavlm", True), ("whisper", True), ("hubert", False)])
def test_length_buckets_leave_the_features_unchanged(tiny_dir, kind, padded):
    """bucket_seconds pads a batch's length to a multiple (padding-invariant teachers only: HuBERT's
    group-norm encoder is left as it is) and gives the same features and frame counts."""
    ref = _teacher(tiny_dir, kind, layers="all")
    t = _teacher(tiny_dir, kind, layers="all", bucket_seconds=2.0)
    wave, lengths = _batch()
    assert t._bucketed(wave).shape[1] == (32000 if padded else wave.shape[1])
    fr, flr = ref.extract(wave, lengths)
    fb, flb = t.extract(wave, lengths)
    assert flb.tolist() == flr.tolist()
    for layer in t.layers:
        assert fb[layer].shape == fr[layer].shape
        for b, n in enumerate(flb.tolist()):
            torch.testing.assert_close(fb[layer][b, :n], fr[layer][b, :n], atol=2e-4, rtol=1e-4)


def test_speed_lever_options_are_validated():
    from audistill.extract.errors import SpecError
    from audistill.extract.spec import parse_specs

    s = parse_specs(
        [
            {
                "name": "w",
                "source": "x",
                "precision": "weights",
                "compile": "reduce-overhead",
                "bucket_seconds": 4,
            }
        ],
        "t",
    )[0]
    assert (s.precision, s.compile, s.bucket_seconds) == ("weights", "reduce-overhead", 4.0)
    with pytest.raises(SpecError) as e:
        parse_specs(
            [
                {
                    "name": "w",
                    "source": "x",
                    "precision": "fp8",
                    "compile": "fast",
                    "bucket_seconds": -1,
                }
            ],
            "t",
        )
    assert (
        "precision 'fp8'" in str(e.value)
        and "compile 'fast'" in str(e.value)
        and "bucket_seconds" in str(e.value)
    )


@pytest.mark.slow
def test_compiled_teacher_stays_within_tolerance(tiny_dir):
    """compile = "default" (inductor; minutes on a small CPU): two batch shapes (the second one
    compiles a dynamic graph), features within float32 rounding of eager, fingerprint unchanged."""
    ref = _teacher(tiny_dir, "wavlm", layers="all")
    t = _teacher(tiny_dir, "wavlm", layers="all", compile="default")
    assert t.fingerprint() == ref.fingerprint()
    wave, lengths = _batch()
    for rows, n in ((4, wave.shape[1]), (2, 16000)):
        w, ln = wave[:rows, :n], lengths[:rows].clamp(max=n)
        fc, flc = t.extract(w, ln)
        fr, flr = ref.extract(w, ln)
        assert flc.tolist() == flr.tolist()
        for layer in t.layers:
            for b, m in enumerate(flc.tolist()):
                torch.testing.assert_close(fc[layer][b, :m], fr[layer][b, :m], atol=1e-3, rtol=1e-3)
