"""`audistill tools bench-catalog`: what a bank's catalog costs as the bank grows.

Builds a bank with one real shard (two teachers) and clones its commit record ``--shards`` times
(files dated an hour back, as after a long run), then times in one run:

* encoding ``bank.json``: now (records built by hand, compact JSON: json's C encoder) against the
  way it was (``dataclasses.asdict`` and ``indent=1``, which forces json's Python encoder);
* opening the bank (parsing ``bank.json``);
* the start-up sync: listing ``commits/`` and reading only the records that can differ, against
  reading every record (what every extraction did as it started; on an object store each read is
  a GET).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from ..options import JsonOpt
from .common import emit


def _old_dumps(catalog) -> bytes:
    d = catalog.to_json()
    d["shards"] = {}
    for k, r in sorted(catalog.shards.items()):
        x = asdict(r)
        x["bytes"] = r.bytes
        x["fields"] = {n: asdict(f) for n, f in r.fields.items()}
        d["shards"][k] = x
    return json.dumps(d, indent=1).encode()


def _one_shard_bank(root: str, layers: int = 4, segments: int = 8):
    """A real bank of one shard: a 1024-wide teacher at 50 Hz, ``layers`` layers, float16."""
    import numpy as np
    import torch

    from audistill.shards.bank import Bank
    from audistill.shards.catalog import TeacherRecord
    from audistill.shards.codecs import get_codec
    from audistill.shards.segments import Segment, make_segment_id

    bank = Bank.create(root, "zarr")
    codec = get_codec("float16")
    keep = list(range(1, layers + 1))
    bank.register_teacher(TeacherRecord(name="wavlm", source="bench/wavlm", dim=1024, frame_rate=50.0,
                                        codec=codec.record(), layers=keep, num_layers=25, revision="r",
                                        fingerprint="f" * 64, home_domain="speech", domains=[]))
    rng = np.random.default_rng(0)
    with bank.write_shard("shard-template", ["wavlm"]) as w:
        for k in range(segments):
            n = 16000 * (2 + k)
            src = f"corpus/clip{k}.wav"
            seg = Segment(make_segment_id(src), src, 0.0, None, "speech", "bench", n)
            feats = {layer: codec.encode(torch.from_numpy(rng.standard_normal((n // 320, 1024)).astype("float32")), None)
                     for layer in keep}
            w.add(seg, rng.integers(-3000, 3000, n).astype(np.int16), {"wavlm": feats})
    return Bank.open(root)


def run_catalog_bench(shards: int = 10000) -> dict:
    from audistill.shards.bank import Bank

    with tempfile.TemporaryDirectory(prefix="audistill-bench-catalog-") as tmp:
        root = os.path.join(tmp, "bank")
        bank = _one_shard_bank(root)
        (rec,) = bank.catalog.shards.values()
        del bank.catalog.shards[rec.name]
        os.remove(os.path.join(root, "commits", f"{rec.name}.json"))
        old = time.time() - 3600
        for i in range(shards):
            r = copy.deepcopy(rec)
            r.name = f"shard-{i:07d}"
            bank.catalog.shards[r.name] = r
            path = os.path.join(root, "commits", f"{r.name}.json")
            with open(path, "w") as f:
                f.write(json.dumps(r.to_json()))
            os.utime(path, (old, old))
        t0 = time.perf_counter()
        new = bank.catalog.dumps()
        t_new = time.perf_counter() - t0
        t0 = time.perf_counter()
        was = _old_dumps(bank.catalog)
        t_old = time.perf_counter() - t0
        if json.loads(new)["shards"] != json.loads(was)["shards"]:
            raise RuntimeError("the catalog encodings differ")
        bank.save_catalog()
        t0 = time.perf_counter()
        opened = Bank.open(root)
        n = len(opened.catalog.shards)
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        every = opened.commit_records()
        t_every = time.perf_counter() - t0
        t0 = time.perf_counter()
        changed = opened.sync_catalog()
        t_sync = time.perf_counter() - t0
        if len(every) != n or changed:
            raise RuntimeError(f"sync changed {len(changed)} records of an up-to-date catalog")
    return {"shards": n, "record_kb": len(json.dumps(rec.to_json())) / 1e3, "catalog_mb": len(new) / 1e6, "catalog_mb_before": len(was) / 1e6,
            "encode_s": t_new, "encode_s_before": t_old, "open_s": t_open,
            "read_every_record_s": t_every, "records_read": len(every), "sync_s": t_sync,
            "encode_speedup": t_old / t_new}


def register(app: typer.Typer) -> None:
    @app.command("bench-catalog")
    def bench_catalog(
        shards: Annotated[int, typer.Option(help="Shards in the catalog.")] = 10000,
        json_out: JsonOpt = False,
    ) -> None:
        """bank.json at SHARDS shards: encoding it (now / before), opening it, the start-up sync."""
        r = run_catalog_bench(shards)
        t = Table("operation", "seconds", "note")
        t.add_row("encode bank.json, before (asdict, indent=1)", f"{r['encode_s_before']:.2f}",
                  f"{r['catalog_mb_before']:.0f} MB")
        t.add_row("encode bank.json, now (by hand, compact)", f"{r['encode_s']:.2f}",
                  f"{r['catalog_mb']:.0f} MB, {r['encode_speedup']:.1f}x faster")
        t.add_row("open the bank (parse bank.json)", f"{r['open_s']:.2f}", "")
        t.add_row("read every commit record (the old sync)", f"{r['read_every_record_s']:.2f}",
                  f"{r['records_read']} reads: GETs on an object store")
        t.add_row("sync now (list commits/, read what may differ)", f"{r['sync_s']:.2f}",
                  "one listing, 0 reads here (includes re-parsing bank.json)")
        emit(r, t, json_out, [f"{r['shards']} shards, clones of one real record of {r['record_kb']:.1f} KB "
                              "(1024-wide teacher, 4 layers, float16; local disk)"])
