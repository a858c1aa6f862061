"""One suite for both layouts: what is written is what is read, exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audistill.shards.bank import Bank
from audistill.shards.catalog import SCHEMA_VERSION, TeacherRecord
from audistill.shards.codecs import codec_names, get_codec
from audistill.shards.errors import CatalogError, MissingDataError, SchemaError, UnsafeKeyError
from audistill.shards.reader import BankReader, crop_hop
from audistill.shards.segments import Segment, make_segment_id

from .helpers import TEACHERS, make_bank

LAYOUTS = ["zarr", "webdataset"]


def assert_matches(reader: BankReader, truth: dict) -> int:
    n = 0
    for sd in reader:
        seg, audio, want = truth[sd.segment.id]
        assert sd.segment == seg
        np.testing.assert_array_equal(sd.audio, audio)
        assert set(sd.features) == set(want) & set(reader.teachers), sd.segment.domain
        for t, layers in sd.features.items():
            assert sorted(layers) == reader.teachers[t]
            for layer, x in layers.items():
                np.testing.assert_array_equal(x, want[t][layer])
        n += 1
    return n


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_round_trip_is_exact(tmp_path, layout):
    bank, truth = make_bank(tmp_path / "b", layout, codec="float32")
    assert assert_matches(BankReader(str(tmp_path / "b")), truth) == len(truth) == 8
    assert bank.catalog.num_segments == 8
    last = bank.full_record("shard-00001")
    assert last.name == "shard-00001" and last.num_segments == 4


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("codec", codec_names())
def test_every_codec_stores_exactly_what_it_encoded(tmp_path, layout, codec):
    _, truth = make_bank(tmp_path / "b", layout, codec=codec, shards=1, per_shard=3)
    assert assert_matches(BankReader(str(tmp_path / "b")), truth) == 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_requested_layers_and_random_access(tmp_path, layout):
    _, truth = make_bank(tmp_path / "b", layout)
    reader = BankReader(str(tmp_path / "b"), {"speechy": [2]}, audio=False)
    some = sorted(truth)[3]
    sd = reader.get(some)
    assert (
        sd.audio is None
        and list(sd.features) == ["speechy"]
        and list(sd.features["speechy"]) == [2]
    )
    np.testing.assert_array_equal(sd.features["speechy"][2], truth[some][2]["speechy"][2])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_crops_are_frame_aligned(tmp_path, layout):
    _, truth = make_bank(tmp_path / "b", layout, durations=[2.0])
    reader = BankReader(str(tmp_path / "b"))
    hop = crop_hop(16000 / r for _, r, *_ in TEACHERS)
    assert hop == 640
    sid = next(k for k, v in truth.items() if v[0].domain == "music")
    sd = reader.get(sid, crop=(3 * hop, 10 * hop))
    np.testing.assert_array_equal(sd.audio, truth[sid][1][3 * hop : 13 * hop])
    for t, rate in (("speechy", 50), ("soundy", 25)):
        per = 16000 // rate
        f0, nf = 3 * hop // per, 10 * hop // per
        assert sd.frame_start[t] == f0
        np.testing.assert_array_equal(sd.features[t][2], truth[sid][2][t][2][f0 : f0 + nf])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_and_one_frame_segments(tmp_path, layout):
    _, truth = make_bank(
        tmp_path / "b", layout, durations=[0.0, 1 / 50, 0.03], shards=1, per_shard=3
    )
    assert assert_matches(BankReader(str(tmp_path / "b")), truth) == 3
    lengths = sorted(len(v[1]) for v in truth.values())
    assert lengths == [0, 320, 480]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_domain_skipped_teacher_is_absent(tmp_path, layout):
    bank, truth = make_bank(tmp_path / "b", layout)
    for sd in BankReader(bank):
        assert ("soundy" in sd.features) == (sd.segment.domain in ("sound", "music"))
    soundy = [f for s in bank.catalog.shards.values() for f in s.teacher_fields("soundy")]
    assert sum(f.num_covered for f in soundy) == 4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_add_teacher_and_layers_without_rewriting(tmp_path, layout):
    bank, truth = make_bank(tmp_path / "b", layout)
    before = {p: m["sha256"] for s in bank.catalog.shards for p, m in bank.shard_files(s).items()}
    codec = get_codec("float16")
    bank.register_teacher(
        TeacherRecord(
            name="late",
            source="t/late",
            dim=4,
            frame_rate=50,
            codec=codec.record(),
            layers=[5],
            num_layers=6,
        )
    )
    rng = np.random.default_rng(1)
    added = {}
    for shard in sorted(bank.catalog.shards):
        reader = bank.shard_reader(shard)
        with bank.add_field(shard, "late") as a:
            for seg in reader.segments:
                x = torch.from_numpy(
                    rng.standard_normal((seg.num_samples // 320, 4)).astype(np.float32)
                )
                a.add(seg, {5: codec.encode(x)})
                added[seg.id] = x.half().float().numpy()
    # more layers of an existing teacher
    speechy = bank.catalog.teachers["speechy"]
    bank.register_teacher(TeacherRecord(**{**speechy.to_json(), "layers": [7]}))
    for shard in sorted(bank.catalog.shards):
        reader = bank.shard_reader(shard)
        with bank.add_field(shard, "speechy", [7]) as a:
            for seg in reader.segments:
                a.add(
                    seg,
                    None
                    if seg.domain == "sound"
                    else {7: get_codec("float32").encode(torch.ones(seg.num_samples // 320, 12))},
                )
    reopened = Bank.open(str(tmp_path / "b"))
    after = {
        p: m["sha256"] for s in reopened.catalog.shards for p, m in reopened.shard_files(s).items()
    }
    assert all(after[p] == h for p, h in before.items())  # nothing rewritten
    assert len(after) > len(before)
    reader = BankReader(str(tmp_path / "b"), {"late": None, "speechy": [1, 7]})
    for sd in reader:
        np.testing.assert_array_equal(sd.features["late"][5], added[sd.segment.id])
        if sd.segment.domain == "sound":
            assert "speechy" not in sd.features
        else:
            np.testing.assert_array_equal(
                sd.features["speechy"][1], truth[sd.segment.id][2]["speechy"][1]
            )
    with pytest.raises(CatalogError, match="already holds"):
        with bank.add_field(sorted(bank.catalog.shards)[0], "late"):
            pass
    from audistill.shards.verify import verify_bank

    assert verify_bank(str(tmp_path / "b")).ok


@pytest.mark.parametrize("src_layout,dst_layout", [("zarr", "webdataset"), ("webdataset", "zarr")])
def test_convert_both_ways_is_lossless(tmp_path, src_layout, dst_layout):
    _, truth = make_bank(
        tmp_path / "a",
        src_layout,
        codec="int8-channel" if "int8-channel" in codec_names() else "bfloat16",
    )
    from audistill.shards.copy import copy_bank

    copy_bank(str(tmp_path / "a"), str(tmp_path / "b"), layout=dst_layout)
    copy_bank(str(tmp_path / "b"), str(tmp_path / "c"), layout=src_layout)
    for root in ("b", "c"):
        assert assert_matches(BankReader(str(tmp_path / root)), truth) == 8
    assert Bank.open(str(tmp_path / "b")).layout == dst_layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_keeps_only_what_is_asked(tmp_path, layout):
    _, truth = make_bank(tmp_path / "a", layout)
    from audistill.shards.copy import copy_bank

    small = copy_bank(str(tmp_path / "a"), str(tmp_path / "b"), teachers={"speechy": [1, 3]})
    assert list(small.catalog.teachers) == ["speechy"] and small.catalog.teachers[
        "speechy"
    ].layers == [1, 3]
    assert small.catalog.bytes < Bank.open(str(tmp_path / "a")).catalog.bytes
    reader = BankReader(small)
    assert assert_matches(reader, truth) == 8
    with pytest.raises(MissingDataError, match="layers \\[2\\]"):
        BankReader(small, {"speechy": [2]})


def test_catalog_schema_and_garbage(tmp_path):
    bank, _ = make_bank(tmp_path / "b", "zarr", shards=1, per_shard=1)
    path = tmp_path / "b" / "bank.json"
    d = json.loads(path.read_text())
    d["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(d))
    with pytest.raises(SchemaError, match="upgrade audistill"):
        Bank.open(str(tmp_path / "b"))
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SchemaError, match="not an audistill bank"):
        Bank.open(str(tmp_path / "b"))
    path.write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        Bank.open(str(tmp_path / "b"))
    with pytest.raises(CatalogError, match="is not a bank"):
        Bank.open(str(tmp_path / "nowhere"))


def test_teacher_identity_is_enforced(tmp_path):
    bank, _ = make_bank(tmp_path / "b", "zarr", shards=1, per_shard=1)
    rec = bank.catalog.teachers["speechy"].to_json()
    with pytest.raises(CatalogError, match="refusing"):
        bank.register_teacher(TeacherRecord(**{**rec, "revision": "r2"}))
    with pytest.raises(CatalogError, match="dim"):
        bank.register_teacher(TeacherRecord(**{**rec, "dim": 99}))
    merged = bank.register_teacher(TeacherRecord(**{**rec, "layers": [9]}))
    assert merged.layers == [1, 2, 3, 9]


@pytest.mark.parametrize(
    "bad", ["a.b", "../x", "a/b", "", "-lead", "x" * 201, "é", "a b", ".hidden"]
)
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(UnsafeKeyError):
        Segment(bad, "src")


def test_unusual_but_safe_ids_round_trip(tmp_path):
    bank = Bank.create(str(tmp_path / "b"), "webdataset")
    codec = get_codec("float32")
    bank.register_teacher(
        TeacherRecord(name="t", source="s", dim=2, frame_rate=50, codec=codec.record(), layers=[0])
    )
    ids = [
        "0",
        "9-lives",
        "A" * 200,
        "a_b-c_" + "9" * 50,
        make_segment_id("../../etc/passwd.wav"),
        make_segment_id("https://host/a b/ü.flac", 1.5, 3.0),
    ]
    with bank.write_shard("s", ["t"]) as w:
        for sid in ids:
            w.add(
                Segment(sid, "x", num_samples=320),
                np.arange(320, dtype=np.int16),
                {"t": {0: codec.encode(torch.ones(1, 2))}},
            )
    assert w.record.name == "s" and w.record.num_segments == len(ids)
    got = [sd.segment.id for sd in BankReader(bank)]
    assert got == ids
    assert all(p.startswith("shards/") for p in bank.shard_files("s"))


def test_segment_ids_are_stable_and_distinct():
    a = make_segment_id("/data/x/clip.wav", 0.0, 30.0)
    assert a == make_segment_id("/data/x/clip.wav", 0.0, 30.0)
    assert a.startswith("clip-000000000-")
    assert (
        len(
            {
                a,
                make_segment_id("/data/x/clip.wav", 30.0, 60.0),
                make_segment_id("/data/y/clip.wav", 0.0, 30.0),
            }
        )
        == 3
    )


def test_codec_state_is_checksummed(tmp_path):
    bank, _ = make_bank(tmp_path / "b", "zarr", shards=1, per_shard=1)
    ref = bank.save_codec_state("speechy", 1, {"w": np.eye(3, dtype=np.float32)})
    np.testing.assert_array_equal(bank.load_codec_state("speechy", 1)["w"], np.eye(3))
    (tmp_path / "b" / ref["path"]).write_bytes(b"garbage")
    with pytest.raises(CatalogError, match="checksum"):
        Bank.open(str(tmp_path / "b")).load_codec_state("speechy", 1)


def test_stats_with_dask_match_numpy(tmp_path):
    bank, truth = make_bank(tmp_path / "b", "zarr")
    from audistill.shards.stats import compute_stats

    stats = compute_stats(str(tmp_path / "b"))
    allx = np.concatenate([v[2]["speechy"][2] for v in truth.values() if "speechy" in v[2]])
    s = stats["speechy"]["2"]
    assert s["count"] == allx.shape[0]
    np.testing.assert_allclose(s["mean"], allx.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s["std"], allx.std(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s["absmax"], np.abs(allx).max(0), rtol=1e-6)
    assert Bank.open(str(tmp_path / "b")).catalog.stats["speechy"]["2"]["count"] == allx.shape[0]


def test_stats_on_a_distributed_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    bank, _ = make_bank(tmp_path / "b", "webdataset")
    from audistill.shards.stats import compute_stats

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        stats = compute_stats(str(tmp_path / "b"), scheduler=cluster.scheduler_address)
    local = compute_stats(str(tmp_path / "b"), save=False)
    np.testing.assert_allclose(stats["soundy"]["4"]["std"], local["soundy"]["4"]["std"], rtol=1e-6)


@pytest.mark.parametrize("codec", [c for c in ("float16", "mvq") if c in codec_names()])
def test_recode_equals_encoding_the_originals(tmp_path, codec):
    _, truth = make_bank(tmp_path / "a", "zarr", codec="float32", shards=1)
    from audistill.shards.copy import recode_bank

    out = recode_bank(str(tmp_path / "a"), str(tmp_path / "b"), codec, layout="webdataset")
    assert out.catalog.teachers["speechy"].codec["name"] == codec
    c = get_codec(codec)
    for sd in BankReader(out):
        for t, layers in sd.features.items():
            for layer, x in layers.items():
                st = out.load_codec_state(t, layer)
                tst = None if st is None else {k: torch.from_numpy(v) for k, v in st.items()}
                parts = c.encode(torch.from_numpy(truth[sd.segment.id][2][t][layer]), tst)
                want = c.decode({k: v.numpy() for k, v in parts.items()}, st)
                np.testing.assert_array_equal(x, want)


def test_sync_reads_only_the_commit_records_that_can_differ_from_the_catalog(tmp_path, monkeypatch):
    import json
    import os
    import time

    import audistill.shards.recovery as recovery
    from audistill.shards.fs import BankFS

    root = tmp_path / "b"
    make_bank(root, "zarr", shards=3, per_shard=2)
    monkeypatch.setattr(recovery, "SYNC_CLOCK_MARGIN_S", 0.0)
    old = time.time() - 3600
    for f in (root / "commits").iterdir():
        os.utime(f, (old, old))  # committed an hour before the catalog was written
    reads = []
    real = BankFS.read_many
    monkeypatch.setattr(
        BankFS,
        "read_many",
        lambda self, rels, **kw: reads.append(list(rels)) or real(self, rels, **kw),
    )
    bank = Bank.open(str(root))
    assert bank.sync_catalog() == [] and reads == [[]]

    names = sorted(bank.catalog.shards)
    new = json.loads((root / "commits" / f"{names[0]}.json").read_text())
    new["name"] = "shard-from-another-slice"
    (root / "commits" / "shard-from-another-slice.json").write_text(
        json.dumps(new)
    )  # a shard the catalog lacks
    grown = json.loads((root / "commits" / f"{names[1]}.json").read_text())
    grown["fields"]["audio"]["num_frames"] += (
        10**6
    )  # rewritten elsewhere (e.g. a teacher added): another size
    (root / "commits" / f"{names[1]}.json").write_text(json.dumps(grown))
    os.utime(root / "commits" / f"{names[1]}.json", (old, old))
    reads.clear()
    assert Bank.open(str(root)).sync_catalog() == sorted(["shard-from-another-slice", names[1]])
    assert sorted(reads[0]) == sorted(
        ["commits/shard-from-another-slice.json", f"commits/{names[1]}.json"]
    )
    synced = Bank.open(str(root)).catalog
    assert (
        synced.shards[names[1]].fields["audio"].num_frames == grown["fields"]["audio"]["num_frames"]
    )

    reads.clear()
    fresh = Bank.open(str(root))
    fresh.catalog.written_at = (
        None  # a catalog that does not say when it was written: every record is read
    )
    fresh.reload = lambda: None
    fresh.sync_catalog()
    assert len(reads[0]) == 4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_reader_keeps_only_its_most_recent_shards_open(tmp_path, layout, monkeypatch):
    import random

    from audistill.shards.layout_wds import WdsShardReader

    _, truth = make_bank(tmp_path / "b", layout, shards=4, per_shard=2)
    closed = []
    real_close = WdsShardReader.close
    monkeypatch.setattr(
        WdsShardReader, "close", lambda self: closed.append(self.name) or real_close(self)
    )
    reader = BankReader(str(tmp_path / "b"), max_open_shards=2)
    assert assert_matches(reader, truth) == 8 and len(reader._readers) <= 2
    ids = sorted(truth)
    random.Random(0).shuffle(ids)
    for sid in ids:  # random access across every shard (locate() opens each one)
        sd = reader.get(sid)
        np.testing.assert_array_equal(sd.audio, truth[sid][1])
        assert len(reader._readers) <= 2
    if layout == "webdataset":
        assert len(closed) >= 4  # evicted readers closed their files
