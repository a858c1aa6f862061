"""`audistill tools bench-catalog`: what a bank's catalog costs as the bank grows.

Builds a bank with one real shard (two teachers) and clones its commit record ``--shards`` times
(files dated an hour back, as after a long run), then compares in one run:

* ``bank.json`` as schema 1 wrote it - every shard's file list inside (~50 files a Zarr shard) -
  against schema 2, which leaves the lists in ``commits/NAME.json``: its size, encoding it,
  opening the bank (parsing it), and the peak Python memory while opening it (every reader
  process - each DataLoader worker - opens one; the old code also kept the file lists);
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
from typing import Annotated

import typer
from rich.table import Table

from ..cli.options import JsonOpt
from .common import emit, real_bank


def _schema_1_dumps(catalog, records: dict) -> bytes:
    """bank.json as schema 1 wrote it (compactly, as audistill did last): the commit records, each
    with its file list, under "shards"."""
    d = catalog.to_json()
    d["schema_version"] = 1
    d["shards"] = {k: records[k] for k in sorted(catalog.shards)}
    return json.dumps(d, separators=(",", ":")).encode()


def _open_cost(root: str) -> tuple[float, float]:
    """Seconds to open the bank, and the peak MB of Python memory while opening it (parsing a
    schema-1 bank.json builds every file list at once - the old code then kept them)."""
    import gc
    import tracemalloc

    from audistill.shards.bank import Bank

    gc.collect()
    tracemalloc.start()
    bank = Bank.open(root)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    Bank.open(root)  # timed again without tracemalloc's overhead
    del bank
    return time.perf_counter() - t0, peak / 1e6


def run_catalog_bench(shards: int = 10000) -> dict:
    from audistill.shards.bank import Bank

    with tempfile.TemporaryDirectory(prefix="audistill-bench-catalog-") as tmp:
        root = os.path.join(tmp, "bank")
        bank = real_bank(root)
        (name,) = bank.catalog.shards
        full = bank.full_record(name)
        del bank.catalog.shards[name]
        os.remove(os.path.join(root, "commits", f"{name}.json"))
        old = time.time() - 3600
        records = {}
        for i in range(shards):
            r = copy.deepcopy(full)
            r.name = f"shard-{i:07d}"
            records[r.name] = r.to_json()
            data = json.dumps(records[r.name]).encode()
            r.commit_bytes = len(data)
            bank.catalog.shards[r.name] = r.slim()
            path = os.path.join(root, "commits", f"{r.name}.json")
            with open(path, "wb") as f:
                f.write(data)
            os.utime(path, (old, old))
        t0 = time.perf_counter()
        was = _schema_1_dumps(bank.catalog, records)
        t_old = time.perf_counter() - t0
        t0 = time.perf_counter()
        new = bank.catalog.dumps()
        t_new = time.perf_counter() - t0
        with open(os.path.join(root, "bank.json"), "wb") as f:
            f.write(was)
        open_old, mem_old = _open_cost(root)
        bank.save_catalog()
        open_new, mem_new = _open_cost(root)
        opened = Bank.open(root)
        n = len(opened.catalog.shards)
        if {k: r.summary_json() for k, r in opened.catalog.shards.items()} != {
            k: r.summary_json() for k, r in bank.catalog.shards.items()
        }:
            raise RuntimeError("the catalog read back differs from the one written")
        t0 = time.perf_counter()
        every = opened.commit_records()
        t_every = time.perf_counter() - t0
        t0 = time.perf_counter()
        changed = opened.sync_catalog()
        t_sync = time.perf_counter() - t0
        if len(every) != n or changed:
            raise RuntimeError(f"sync changed {len(changed)} records of an up-to-date catalog")
    return {
        "shards": n,
        "record_kb": len(json.dumps(full.to_json())) / 1e3,
        "files_per_shard": full.num_files,
        "catalog_mb": len(new) / 1e6,
        "catalog_mb_before": len(was) / 1e6,
        "encode_s": t_new,
        "encode_s_before": t_old,
        "open_s": open_new,
        "open_s_before": open_old,
        "memory_mb": mem_new,
        "memory_mb_before": mem_old,
        "read_every_record_s": t_every,
        "records_read": len(every),
        "sync_s": t_sync,
        "size_ratio": len(was) / len(new),
        "open_speedup": open_old / open_new,
        "memory_ratio": mem_old / mem_new,
    }


def register(app: typer.Typer) -> None:
    @app.command("bench-catalog")
    def bench_catalog(
        shards: Annotated[int, typer.Option(help="Shards in the catalog.")] = 10000,
        json_out: JsonOpt = False,
    ) -> None:
        """bank.json at SHARDS shards, schema 1 against 2: size, encoding, opening, memory; the
        start-up sync."""
        r = run_catalog_bench(shards)
        t = Table("operation", "schema 1 (file lists inside)", "schema 2 (now)", "ratio")
        t.add_row(
            "bank.json size, MB",
            f"{r['catalog_mb_before']:.1f}",
            f"{r['catalog_mb']:.1f}",
            f"{r['size_ratio']:.0f}x",
        )
        t.add_row(
            "encode bank.json, s",
            f"{r['encode_s_before']:.2f}",
            f"{r['encode_s']:.2f}",
            f"{r['encode_s_before'] / r['encode_s']:.0f}x",
        )
        t.add_row(
            "open the bank (parse bank.json), s",
            f"{r['open_s_before']:.2f}",
            f"{r['open_s']:.2f}",
            f"{r['open_speedup']:.0f}x",
        )
        t.add_row(
            "peak Python memory opening it, MB",
            f"{r['memory_mb_before']:.0f}",
            f"{r['memory_mb']:.0f}",
            f"{r['memory_ratio']:.0f}x",
        )
        if json_out:
            emit(r, None, True)
            return
        emit(r, t, False)
        t = Table("sync", "seconds", "note")
        t.add_row(
            "read every commit record (the old sync)",
            f"{r['read_every_record_s']:.2f}",
            f"{r['records_read']} reads: GETs on an object store",
        )
        t.add_row(
            "sync now (list commits/, read what may differ)",
            f"{r['sync_s']:.2f}",
            "one listing, 0 reads here (includes re-parsing bank.json)",
        )
        emit(
            r,
            t,
            False,
            [
                f"{r['shards']} shards, clones of one real commit record of {r['record_kb']:.1f} "
                "KB, "
                f"{r['files_per_shard']} files (1024-wide teacher, 4 layers, float16; local disk)"
            ],
        )
