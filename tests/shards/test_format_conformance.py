"""docs/FORMAT.md is enough to read a bank: a bank holding every codec (both layouts) is written
by the library, then read by a reader written from FORMAT.md alone - json, zarr, tarfile,
numcodecs, numpy and the standard library, no audistill - and every value must be what the
library's reader returns."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zlib
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

# -- writing, with the library ---------------------------------------------------------------------

# (teacher name, codec name, codec parameters): every registered codec, and the variants that
# change the part list
CODECS = [
    ("t-f32", "float32", {}),
    ("t-f16", "float16", {}),
    ("t-bf16", "bfloat16", {}),
    ("t-i8row", "int8-row", {}),
    ("t-i8row32", "int8-row", {"scale_dtype": "float32"}),
    ("t-i8ch", "int8-channel", {}),
    ("t-i4", "int4-group", {"group": 8}),
    ("t-delta", "int8-delta", {}),
    ("t-mvq", "mvq", {"codebooks": 4}),
    ("t-mvqn", "mvq", {"codebooks": 3, "normalize": True}),
]
DIM = 10  # not a multiple of the int4 group or the VQ codebooks: padding is exercised
LAYERS = [0, 3]


def _build(root: Path, layout: str) -> None:
    import torch

    from audistill.shards.bank import Bank
    from audistill.shards.catalog import TeacherRecord
    from audistill.shards.codecs import codec_names, get_codec
    from audistill.shards.segments import Segment, make_segment_id
    from audistill.shards.stats import compute_stats

    assert {c for _, c, _ in CODECS} == set(codec_names()), (
        "a codec FORMAT.md must describe is missing here"
    )
    rng = np.random.default_rng(7)
    bank = Bank.create(str(root), layout)
    codecs = {}
    for name, cname, params in CODECS:
        codec = codecs[name] = get_codec(cname, **params)
        bank.register_teacher(
            TeacherRecord(
                name=name,
                source=f"test/{name}",
                dim=DIM,
                frame_rate=50.0,
                codec=codec.record(),
                layers=LAYERS,
                num_layers=4,
            ),
            save=False,
        )
        if codec.needs_fit:
            for layer in LAYERS:
                bank.save_codec_state(
                    name,
                    layer,
                    codec.fit(rng.standard_normal((400, DIM)).astype(np.float32)),
                    save=False,
                )
    bank.save_catalog()
    states = {(t, layer): bank.load_codec_state(t, layer) for t, _, _ in CODECS for layer in LAYERS}
    k = 0
    for shard in ("alpha", "beta"):
        with bank.write_shard(shard, [t for t, _, _ in CODECS]) as w:
            for i in range(3):
                n = 16000 * (1 + i) // 2 + 37 * k
                src = f"/corpus/clip {k}.wav"
                seg = Segment(
                    make_segment_id(src, 0.25, 0.25 + n / 16000),
                    src,
                    0.25,
                    0.25 + n / 16000,
                    "speech",
                    "test",
                    n,
                )
                feats = {}
                for t, _, _ in CODECS:
                    if (k + len(t)) % 5 == 0:  # some teachers skip some segments
                        feats[t] = None
                        continue
                    frames = n // 320
                    feats[t] = {}
                    for layer in LAYERS:
                        x = torch.from_numpy(
                            (rng.standard_normal((frames, DIM)) * (1 + layer)).astype(np.float32)
                        )
                        st = states[(t, layer)]
                        feats[t][layer] = codecs[t].encode(
                            x,
                            None if st is None else {a: torch.from_numpy(b) for a, b in st.items()},
                        )
                w.add(seg, rng.integers(-3000, 3000, n).astype(np.int16), feats)
                k += 1
    compute_stats(str(root), teachers={"t-f32": None}, scheduler="synchronous")


def _library_values(root: Path) -> dict:
    from audistill.shards.reader import BankReader

    out = {}
    for sd in BankReader(str(root)):
        out[sd.segment.id] = (sd.audio, {t: dict(layers) for t, layers in sd.features.items()})
    return out


# -- reading, from FORMAT.md alone -----------------------------------------------------------------

ZSTD = {"id": "zstd", "level": 3}


def _blosc(t, s):
    return {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": s, "typesize": t}


def _small(t, s):
    return {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": s, "typesize": t}


KNOWN_VERSIONS = {
    "float32": 1,
    "float16": 1,
    "bfloat16": 1,
    "int8-row": 1,
    "int8-channel": 1,
    "int4-group": 1,
    "int8-delta": 1,
    "mvq": 1,
}


def fmt_parts(codec: dict, dim: int) -> list[dict]:
    """FORMAT.md section 4, the part table: [{"name", "kind", "dtype", "shape", "compressor"}]."""
    name, cfg = codec["name"], codec["config"]

    def p(n, kind, dtype, shape, comp):
        return {"name": n, "kind": kind, "dtype": dtype, "shape": list(shape), "compressor": comp}

    if name == "float32":
        return [p("x", "frame", "float32", (dim,), _blosc(4, 1))]
    if name == "float16":
        return [p("x", "frame", "float16", (dim,), _blosc(2, 1))]
    if name == "bfloat16":
        return [p("x", "frame", "uint16", (dim,), _blosc(2, 2))]
    if name == "int8-row":
        return [
            p("q", "frame", "int8", (dim,), ZSTD),
            p("scale", "frame", cfg["scale_dtype"], (1,), ZSTD),
        ]
    if name == "int8-channel":
        return [
            p("q", "frame", "int8", (dim,), ZSTD),
            p("scale", "segment", "float32", (dim,), _small(4, 1)),
        ]
    if name == "int4-group":
        g = cfg["group"]
        dp = -(-dim // g) * g
        return [
            p("q", "frame", "uint8", (dp // 2,), ZSTD),
            p("scale", "frame", "float16", (dp // g,), ZSTD),
            p("pad", "segment", "uint8", (1,), _small(1, 0)),
        ]
    if name == "int8-delta":
        return [
            p("d", "frame", "uint8", (dim,), {"id": "zstd", "level": cfg["level"]}),
            p("shift", "segment", "uint8", (dim,), _small(1, 0)),
        ]
    if name == "mvq":
        out = [p("codes", "frame", "uint8", (cfg["codebooks"],), ZSTD)]
        return out + [p("norm", "frame", "float16", (1,), ZSTD)] if cfg["normalize"] else out
    raise AssertionError(f"FORMAT.md has no codec {name!r}")


def fmt_decode(codec: dict, parts: dict[str, np.ndarray], state: dict | None) -> np.ndarray:
    """FORMAT.md section 4, the decode table."""
    name, cfg = codec["name"], codec["config"]
    f32 = np.float32
    if name == "float32":
        return parts["x"]
    if name == "float16":
        return parts["x"].astype(f32)
    if name == "bfloat16":
        return (parts["x"].astype(np.uint32) << 16).view(f32)
    if name in ("int8-row", "int8-channel"):
        return parts["q"].astype(f32) * parts["scale"].astype(f32)
    if name == "int4-group":
        q, g = parts["q"], cfg["group"]
        t = q.shape[0]
        v = np.empty((t, q.shape[1] * 2), np.int8)
        v[:, 0::2] = (q & 15).astype(np.int8) - 8
        v[:, 1::2] = (q >> 4).astype(np.int8) - 8
        x = (v.astype(f32).reshape(t, -1, g) * parts["scale"].astype(f32)[..., None]).reshape(t, -1)
        pad = int(parts["pad"][0, 0])
        return x[:, : x.shape[1] - pad]
    if name == "int8-delta":
        d = parts["d"].copy()
        if len(d):
            d[0] += np.uint8(128)
        u = (np.cumsum(d.astype(np.int64), axis=0) % 256).astype(np.uint8)
        factors = np.exp2(np.arange(256) / 8).astype(f32)
        eff = state["step"].astype(f32) * factors[parts["shift"][0]]
        return u.astype(f32) * eff + (state["center"].astype(f32) - f32(128) * eff)
    if name == "mvq":
        cb, codes = state["codebooks"].astype(f32), parts["codes"]
        c, _, s = cb.shape
        x = np.empty((codes.shape[0], c * s), f32)
        for j in range(c):
            x[:, j * s : (j + 1) * s] = cb[j, codes[:, j]]
        x = x[:, : int(state["dim"].reshape(-1)[0])]
        if "norm" in parts:
            x = x * parts["norm"].astype(f32)
        return x + state["mean"].astype(f32)
    raise AssertionError(name)


def _layer_key(layer: int) -> str:
    return f"L{layer:02d}"


class FormatReader:
    """A bank reader written from docs/FORMAT.md: every segment's audio and decoded features."""

    def __init__(self, root: Path):
        self.root = root
        self.catalog = json.loads((root / "bank.json").read_text())
        assert self.catalog["format"] == "audistill-bank" and self.catalog["schema_version"] in (
            1,
            2,
        )
        self.states = {}
        for name, t in self.catalog["teachers"].items():
            for layer, ref in t["codec_state"].items():
                data = (root / ref["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == ref["sha256"]
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    self.states[(name, int(layer))] = {k: z[k] for k in z.files}

    def commit(self, shard: str) -> dict:
        rec = json.loads((self.root / "commits" / f"{shard}.json").read_text())
        for fname, digests in rec.get("codec_states", {}).items():
            teacher = rec["fields"][fname]["teacher"]
            for layer, sha in digests.items():
                assert self.catalog["teachers"][teacher]["codec_state"][layer]["sha256"] == sha
        return rec

    def check_codec(self, codec: dict) -> None:
        assert codec["version"] <= KNOWN_VERSIONS[codec["name"]], (
            f"codec {codec} is newer than this reader"
        )

    def read(self) -> dict:
        out = {}
        for shard, entry in self.catalog["shards"].items():
            rec = self.commit(shard)
            read = self.read_zarr if entry["layout"] == "zarr" else self.read_wds
            out.update(read(shard, rec))
        return out

    def _decode(self, teacher: str, spec: dict, layer: int, parts: dict) -> np.ndarray:
        return fmt_decode(spec["codec"], parts, self.states.get((teacher, layer)))

    def read_zarr(self, shard: str, rec: dict) -> dict:
        g = zarr.open_group(str(self.root / "shards" / f"{shard}.zarr"), mode="r")
        segments = g.attrs["audistill"]["segments"]
        samples, offsets = g["audio/samples"][:], g["audio/offsets"][:]
        out = {s["id"]: (samples[offsets[i] : offsets[i + 1]], {}) for i, s in enumerate(segments)}
        for fname, f in rec["fields"].items():
            if f["teacher"] is None:
                continue
            fg = g[fname]
            spec = dict(fg.attrs["audistill"])
            self.check_codec(spec["codec"])
            parts = fmt_parts(spec["codec"], spec["dim"])
            off, present = fg["offsets"][:], fg["present"][:]
            for layer in spec["layers"]:
                arrays = {p["name"]: fg[f"{_layer_key(layer)}/{p['name']}"][:] for p in parts}
                for p in parts:
                    assert arrays[p["name"]].dtype == np.dtype(p["dtype"])
                    assert list(arrays[p["name"]].shape[1:]) == p["shape"]
                for i, s in enumerate(segments):
                    if not present[i]:
                        continue
                    seg_parts = {
                        p["name"]: arrays[p["name"]][i : i + 1]
                        if p["kind"] == "segment"
                        else arrays[p["name"]][off[i] : off[i + 1]]
                        for p in parts
                    }
                    x = self._decode(spec["teacher"], spec, layer, seg_parts)
                    out[s["id"]][1].setdefault(spec["teacher"], {})[layer] = x
        return out

    def read_wds(self, shard: str, rec: dict) -> dict:
        def index(fname):
            return json.loads((self.root / "shards" / f"{shard}.{fname}.json").read_text())

        def members(fname) -> dict[str, bytes]:
            with tarfile.open(self.root / "shards" / f"{shard}.{fname}.tar") as tar:
                return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}

        def member(tar_bytes: dict, raw: bytes, key: str, mname: str, m: dict) -> bytes:
            data = raw[m["offset"] : m["offset"] + m["size"]]  # the index's ranged read ...
            assert (
                data == tar_bytes[f"{key}.{mname}"] and zlib.crc32(data) == m["crc32"]
            )  # ... is the member
            return data

        audio_index = index("audio")
        audio_tar, audio_raw = (
            members("audio"),
            (self.root / "shards" / f"{shard}.audio.tar").read_bytes(),
        )
        order = [e["key"] for e in audio_index["segments"]]  # the shard's segment order
        out = {}
        for e in audio_index["segments"]:
            a = np.load(
                io.BytesIO(
                    member(audio_tar, audio_raw, e["key"], "audio.npy", e["members"]["audio.npy"])
                )
            )
            seg = json.loads(member(audio_tar, audio_raw, e["key"], "json", e["members"]["json"]))
            assert seg["id"] == e["key"] and a.shape == (e["samples"],)
            out[e["key"]] = (a, {})
        for fname, f in rec["fields"].items():
            if f["teacher"] is None:
                continue
            idx = index(fname)
            spec = idx["field"]
            self.check_codec(spec["codec"])
            assert idx["parts"] == fmt_parts(
                spec["codec"], spec["dim"]
            )  # the index's parts are section 4's
            assert [e["key"] for e in idx["segments"]] == order
            tar, raw = members(fname), (self.root / "shards" / f"{shard}.{fname}.tar").read_bytes()
            for e in idx["segments"]:
                if e["members"] is None:
                    continue
                for layer in spec["layers"]:
                    parts = {}
                    for p in idx["parts"]:
                        mname = f"{_layer_key(layer)}.{p['name']}.bin"
                        data = member(tar, raw, e["key"], mname, e["members"][mname])
                        rows = 1 if p["kind"] == "segment" else e["frames"]
                        if rows * int(np.prod(p["shape"])):
                            comp = {k: v for k, v in p["compressor"].items() if k != "typesize"}
                            data = numcodecs.get_codec(comp).decode(data)
                        parts[p["name"]] = np.frombuffer(data, dtype=p["dtype"]).reshape(
                            rows, *p["shape"]
                        )
                    out[e["key"]][1].setdefault(spec["teacher"], {})[layer] = self._decode(
                        spec["teacher"], spec, layer, parts
                    )
        return out

    def layer_bytes(self, shard: str, rec: dict, fname: str, layer: int) -> int:
        """FORMAT.md section 1 (SHARD, fields) and 3.3: what ``layer_bytes`` counts."""
        if rec["layout"] == "zarr":
            prefix = f"shards/{shard}.zarr/{fname}/{_layer_key(layer)}/"
            return sum(m["bytes"] for p, m in rec["files"].items() if p.startswith(prefix))
        idx = json.loads((self.root / "shards" / f"{shard}.{fname}.json").read_text())
        return sum(
            m["size"]
            for e in idx["segments"]
            for n, m in (e["members"] or {}).items()
            if n.startswith(f"{_layer_key(layer)}.")
        )


def segment_id(seg: dict) -> str:
    """FORMAT.md section 2."""
    stem = seg["source"].rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:48] or "seg"
    stem = stem if stem[0].isalnum() else "s" + stem
    start_ms = round(seg["start"] * 1000)
    end_ms = -1 if seg["end"] is None else round(seg["end"] * 1000)
    digest = hashlib.sha1(
        f"{seg['source']}\0{start_ms}\0{end_ms}".encode(errors="surrogateescape")
    ).hexdigest()
    return f"{stem}-{start_ms:09d}-{digest[:12]}"


# -- the checks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["zarr", "webdataset"])
def bank(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param) / "bank"
    _build(root, request.param)
    return root


def test_a_reader_written_from_the_format_reads_what_the_library_reads(bank):
    ours, lib = FormatReader(bank).read(), _library_values(bank)
    assert set(ours) == set(lib) and len(ours) == 6
    teachers_seen = set()
    for sid, (audio, feats) in lib.items():
        np.testing.assert_array_equal(ours[sid][0], audio)
        assert set(ours[sid][1]) == set(feats), sid  # the same teachers cover the same segments
        for t, layers in feats.items():
            teachers_seen.add(t)
            for layer, x in layers.items():
                got = ours[sid][1][t][layer]
                assert got.dtype == np.float32 and got.shape == x.shape, (
                    t,
                    layer,
                    got.dtype,
                    got.shape,
                )
                # the same stored bytes, decoded by the same arithmetic: equal, to the bit
                np.testing.assert_array_equal(got, x, err_msg=f"{t} layer {layer}")
    assert teachers_seen == {t for t, _, _ in CODECS}


def test_the_catalog_says_what_the_format_says_it_does(bank):
    r = FormatReader(bank)
    layout = r.catalog["layout"]
    for shard, entry in r.catalog["shards"].items():
        rec = r.commit(shard)
        assert {k: v for k, v in rec.items() if k not in ("files", "codec_states", "teachers")} == {
            k: v for k, v in entry.items() if k != "commit_bytes"
        }
        assert entry["bytes"] == sum(m["bytes"] for m in rec["files"].values()) and entry[
            "num_files"
        ] == len(rec["files"])
        for fname, f in entry["fields"].items():
            for layer in f["layers"]:
                assert f["layer_bytes"][str(layer)] == r.layer_bytes(shard, rec, fname, layer), (
                    fname,
                    layer,
                )
        audio = entry["fields"]["audio"]
        stored = (
            sum(len(a) for a, _ in r.read_zarr(shard, rec).values()) if layout == "zarr" else None
        )
        if layout == "zarr":
            assert audio["num_frames"] == stored == entry["num_samples"]
        else:
            assert audio["num_frames"] == 0
    for sid, _ in r.read().items():
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}", sid)
    segs = _segments(bank, layout)
    assert all(segment_id(s) == s["id"] for s in segs) and len(segs) == 6


def test_stats_hold_the_population_std_of_the_decoded_features(bank):
    r = FormatReader(bank)
    stats = r.catalog["stats"]["t-f32"]
    for layer in LAYERS:
        x = np.concatenate(
            [f["t-f32"][layer] for _, f in r.read().values() if "t-f32" in f]
        ).astype(np.float64)
        s = stats[str(layer)]
        assert s["count"] == x.shape[0]
        np.testing.assert_allclose(s["std"], x.std(0, ddof=0).astype(np.float32), rtol=1e-5)
        np.testing.assert_allclose(s["mean"], x.mean(0).astype(np.float32), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s["absmax"], np.abs(x).max(0).astype(np.float32))


def test_zarr_compresses_segment_parts_with_zstd_and_frame_parts_with_their_own(bank):
    if FormatReader(bank).catalog["layout"] != "zarr":
        pytest.skip("a WebDataset part has one compressor, its own (the index says it)")
    group = bank / "shards" / "alpha.zarr" / "t-i8ch"
    spec = json.loads((group / "zarr.json").read_text())["attributes"]["audistill"]
    for p in fmt_parts(spec["codec"], spec["dim"]):
        codecs = json.loads((group / "L00" / p["name"] / "zarr.json").read_text())["codecs"]
        if p["kind"] == "segment":
            assert [c["name"] for c in codecs] == ["bytes", "zstd", "crc32c"] and codecs[1][
                "configuration"
            ]["level"] == 3
        else:
            inner = codecs[0]["configuration"]["codecs"]
            assert (
                codecs[0]["name"] == "sharding_indexed"
                and inner[1]["name"] == p["compressor"]["id"]
            )
            assert inner[-1]["name"] == "crc32c"


def _segments(root: Path, layout: str) -> list[dict]:
    out = []
    for shard in ("alpha", "beta"):
        if layout == "zarr":
            out += zarr.open_group(str(root / "shards" / f"{shard}.zarr"), mode="r").attrs[
                "audistill"
            ]["segments"]
        else:
            with tarfile.open(root / "shards" / f"{shard}.audio.tar") as tar:
                out += [
                    json.loads(tar.extractfile(m).read())
                    for m in tar.getmembers()
                    if m.name.endswith(".json")
                ]
    return out
