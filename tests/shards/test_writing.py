"""Writing shards: the Zarr layout's own shard-object encoder writes what zarr-python writes, byte
for byte; commits hash data as written."""

import numpy as np
import pytest
import zarr

from audistill.shards.fs import BankFS
from audistill.shards.layout_zarr import _Appender, _StagedGroup, zarr_compressors


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


CASES = [  # (dtype, trailing, compressor, rows, zero rows [lo, hi))
    ("uint8", (96,), {"id": "zstd", "level": 3}, 5000, (0, 0)),
    (
        "int16",
        (),
        {"id": "zstd", "level": 3},
        3 * (1 << 19) * 32 // 16 + 12345,
        (600_000, 1_300_000),
    ),
    (
        "float16",
        (40,),
        {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1, "typesize": 2},
        30_000,
        (0, 14_000),
    ),
    (
        "float32",
        (8,),
        {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2, "typesize": 4},
        100,
        (0, 0),
    ),
    ("uint16", (3,), {"id": "none"}, 70_000, (0, 0)),
    ("int8", (16,), {"id": "zstd", "level": 3}, 4000, (0, 4000)),  # all fill: no object at all
]


@pytest.mark.parametrize("dtype,trailing,comp,rows,zeros", CASES)
def test_shard_objects_equal_zarr_python(tmp_path, dtype, trailing, comp, rows, zeros):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((rows, *trailing)) * 50).astype(dtype)
    data[zeros[0] : zeros[1]] = 0  # whole fill-value chunks are not stored
    ours = _StagedGroup(BankFS(str(tmp_path)), "ours")
    app = _Appender(ours.group, "x", dtype, trailing, comp, ours.put)
    for lo in range(0, rows, 7777):  # appended in pieces: whole objects, then the rest at close
        app.append(data[lo : lo + 7777])
    app.close()
    ours.upload()
    ref = zarr.open_group(str(tmp_path / "ref"), mode="w", zarr_format=3)
    arr = ref.create_array(
        "x",
        shape=(rows, *trailing),
        dtype=dtype,
        chunks=(app.chunk_rows, *trailing),
        shards=(app.block_rows, *trailing),
        compressors=zarr_compressors(comp),
        fill_value=0,
        dimension_names=None,
    )
    arr[:] = data
    files = _files(tmp_path / "ours")
    assert files == _files(tmp_path / "ref")  # metadata and every shard object
    objects = [k for k in files if "/c/" in k]
    assert len(objects) == (0 if zeros == (0, rows) else -(-rows // app.block_rows))
    back = zarr.open_group(str(tmp_path / "ours"), mode="r")["x"]
    assert back.shape == data.shape
    np.testing.assert_array_equal(back[:], data)


@pytest.mark.parametrize("layout", ["zarr", "webdataset"])
def test_commit_hashes_data_as_written_not_by_reading_it_back(tmp_path, monkeypatch, layout):
    """A commit record's size and sha256 of each data file (Zarr shard objects, WebDataset tars)
    come from the bytes as they were written (on object storage, reading back would download the
    shard again); only small files (metadata, offsets, indexes) are read. The records are right:
    verify recomputes every one."""
    import re

    import torch

    from audistill.shards.bank import Bank
    from audistill.shards.catalog import TeacherRecord
    from audistill.shards.codecs import get_codec
    from audistill.shards.fs import BankFS
    from audistill.shards.verify import verify_bank

    from .helpers import make_bank

    # appended arrays (audio, frame parts; offsets etc. are small) / the tars (indexes are small)
    big = re.compile(r"/(samples|L\d+/x)/c/" if layout == "zarr" else r"\.tar$")
    read_back: list[str] = []
    real = BankFS.sha256
    monkeypatch.setattr(
        BankFS, "sha256", lambda self, rel: (read_back.append(rel), real(self, rel))[1]
    )
    bank, _ = make_bank(tmp_path / "b", layout)
    objects = [p for name in bank.catalog.shards for p in bank.shard_files(name) if big.search(p)]
    assert objects and not [p for p in read_back if big.search(p)]
    assert read_back  # the small files still are
    shard = sorted(bank.catalog.shards)[0]
    bank.register_teacher(
        TeacherRecord(
            name="late",
            source="t/late",
            dim=4,
            frame_rate=50,
            codec=get_codec("float16").record(),
            layers=[2],
            num_layers=3,
        )
    )
    read_back.clear()
    with bank.add_field(shard, "late") as a:  # a field added to a committed shard: the same
        for seg in bank.shard_reader(shard).segments:
            a.add(seg, {2: get_codec("float16").encode(torch.randn(seg.num_samples // 320, 4))})
    added = [
        p
        for p in Bank.open(str(tmp_path / "b")).shard_files(shard)
        if "late" in p and big.search(p)
    ]
    assert added and not [p for p in read_back if big.search(p)]
    monkeypatch.undo()
    report = verify_bank(str(tmp_path / "b"))
    assert report.ok, report


def test_a_staged_field_writes_the_files_a_store_backed_one_writes(tmp_path):
    """Zarr writers stage metadata in memory and upload it at close (an object store saw every
    metadata change as requests): the files are byte for byte those written through a store."""
    from audistill.shards.bank import Bank
    from audistill.shards.layout_zarr import ZarrFieldWriter

    from .helpers import make_bank

    make_bank(tmp_path / "b", "zarr", codec="int8-delta", shards=1, per_shard=12)
    bank = Bank.open(str(tmp_path / "b"))
    reader = bank.shard_reader(sorted(bank.catalog.shards)[0])
    spec = bank.field_spec("speechy")

    def fill(w):
        for i in range(len(reader.segments)):
            covered = reader.covered("speechy", i)
            w.add_layers(
                {x: reader.read_parts("speechy", x, i) for x in spec.layers} if covered else None,
                "t",
            )
        w.close()

    store = BankFS(str(tmp_path / "store"))  # metadata through zarr's store, data objects beside it
    fill(
        ZarrFieldWriter(
            zarr.open_group(str(tmp_path / "store"), mode="w", zarr_format=3).create_group("f"),
            spec,
            lambda objs: store.put_many(dict(objs)),
        )
    )
    staged = _StagedGroup(BankFS(str(tmp_path)), "staged")
    fill(ZarrFieldWriter(staged.group.create_group("f"), spec, staged.put))
    staged.upload()
    assert _files(tmp_path / "staged") == _files(tmp_path / "store")
