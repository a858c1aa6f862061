import dataclasses

import numpy as np
import soundfile as sf
import torch

from audistill.tools.bench.synth import write_bank
from audistill.train.augment import Augment
from audistill.train.data import LoaderSpec, make_loader

from .conftest import make_teachers


def test_augmentation_keeps_length_and_is_deterministic_per_item(tmp_path):
    noise = tmp_path / "noise.wav"
    sf.write(noise, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 8000)
    aug = Augment(gain_db=6.0, noise_files=[str(noise)], noise_prob=1.0, time_mask_seconds=0.2)
    x = torch.sin(torch.arange(16000) / 10.0)
    a = aug(x, np.random.default_rng([1, 2]))
    b = aug(x, np.random.default_rng([1, 2]))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert (a == 0).sum() > 100  # a masked span
    assert not Augment().active and aug.active


def _spec(root, **kw):
    return LoaderSpec(
        root=root,
        teachers={"tspeech": [2, 4], "tmusic": [4]},
        shards=("s000", "s001"),
        crop_samples=16000,
        align_hop=640,
        batch_seconds=3.0,
        shuffle_buffer=3,
        seed=5,
        **kw,
    )


def test_zarr_and_webdataset_banks_give_the_same_batches(tmp_path):
    roots = {}
    for layout in ("zarr", "webdataset"):
        roots[layout] = str(tmp_path / layout)
        write_bank(
            roots[layout],
            make_teachers(),
            num_shards=2,
            segments_per_shard=3,
            seconds=(1.2, 2.5),
            layout=layout,
        )
    za = list(make_loader(_spec(roots["zarr"]), 0, 0, 0, 2, False))
    wd = list(make_loader(_spec(roots["webdataset"]), 0, 0, 0, 2, False))
    assert len(za) == len(wd) > 1
    for a, b in zip(za, wd, strict=True):
        assert a["ids"] == b["ids"]
        torch.testing.assert_close(a["wave"], b["wave"])
        for t in a["targets"]:
            for la in a["targets"][t]:
                torch.testing.assert_close(a["targets"][t][la], b["targets"][t][la])


def test_loader_augmentation_changes_audio_not_targets(tiny_bank):
    sp = LoaderSpec(
        root=tiny_bank,
        teachers={"tspeech": [2]},
        shards=("s000",),
        crop_samples=16000,
        align_hop=640,
        batch_seconds=3.0,
        shuffle_buffer=2,
        seed=0,
    )
    plain = next(iter(make_loader(sp, 0, 0, 0, 2, False)))
    augd = next(
        iter(make_loader(dataclasses.replace(sp, augment={"gain_db": 6.0}), 0, 0, 0, 2, False))
    )
    assert plain["wave"].shape == augd["wave"].shape and not torch.equal(
        plain["wave"], augd["wave"]
    )
    torch.testing.assert_close(plain["targets"]["tspeech"][2], augd["targets"]["tspeech"][2])
