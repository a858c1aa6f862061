"""`audistill tools bench-store`: the bank's object-store operations, against the way they were.

On an S3-compatible store (``--url s3://BUCKET/PREFIX`` with ``--storage-options``; without it a
moto server is started on loopback, which has almost no latency - run it against a real store to
see what latency does), side by side in one run:

* reading ``--records`` commit records: one GET after another (the old start-up sync) against
  ``BankFS.read_many`` (concurrent); and one after another with s3fs's default of asking each
  object's size first (a HEAD before every whole-object read) against the bank's one GET;
* opening a Zarr shard with size checks: a size request per file against one listing;
* committing a shard folder of ``--objects`` objects of 1 MiB: one server-side copy after another
  against ``BankFS.move`` (concurrent copies);
* checking every file of a real bank of ``--verify-shards`` Zarr shards (``shards verify --quick``):
  an existence and a size request per file, one shard after another (the old verify's file
  checks alone) against ``verify_bank`` (a listing per shard, shards checked concurrently - and it
  checks each shard's structure besides);
* pulling that bank's first two layers to a local folder (``shards export``): one shard at a
  time, against 8 at a time (the default when a side is an object store).

``--latency-ms`` adds that much to every request while the operations are timed (the
set-up runs without): moto on loopback answers in about a millisecond, where S3 takes 20-50 ms
per request, so loopback alone hides what concurrency and fewer requests are for.

Everything it writes lives under a fresh prefix and is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Annotated

import typer
from rich.table import Table

from ..cli.options import JsonOpt, StorageOpt, parse_storage_options
from .common import emit


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start (pip install 'moto[server]')")


@contextlib.contextmanager
def _latency(ms: float):
    """Every S3 API call waits ``ms`` first (all of them go through aiobotocore's
    ``_make_api_call``, listings included)."""
    if ms <= 0:
        yield
        return
    import asyncio

    import aiobotocore.client

    real = aiobotocore.client.AioBaseClient._make_api_call

    async def slow(self, operation_name, api_params):
        await asyncio.sleep(ms / 1000)
        return await real(self, operation_name, api_params)

    aiobotocore.client.AioBaseClient._make_api_call = slow
    try:
        yield
    finally:
        aiobotocore.client.AioBaseClient._make_api_call = real


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_store_bench(
    url: str | None = None,
    storage_options: dict | None = None,
    records: int = 500,
    objects: int = 54,
    repeats: int = 2,
    verify_shards: int = 8,
    latency_ms: float = 0.0,
) -> dict:
    import json
    import shutil
    import tempfile

    from audistill.shards.copy import copy_bank
    from audistill.shards.fs import BankFS
    from audistill.shards.verify import verify_bank

    from .common import real_bank

    proc = None
    if url is None:
        import boto3

        proc, endpoint = _moto()
        storage_options = {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket="audistill-bench")
        url = "s3://audistill-bench"
    root = f"{url.rstrip('/')}/bench-store-{uuid.uuid4().hex[:8]}"
    fs = BankFS(root, storage_options)
    fs_head = BankFS(root, {**(storage_options or {}), "max_concurrency": 10})  # s3fs's default
    try:
        record = json.dumps(
            {
                "name": "x",
                "files": {
                    f"shards/x.zarr/f{i}": {"bytes": 1 << 20, "sha256": "0" * 64} for i in range(54)
                },
            }
        ).encode()
        fs.fs.pipe({fs.path(f"commits/s-{i:06d}.json"): record for i in range(records)})
        names = [f"commits/s-{i:06d}.json" for i in range(records)]
        blob = os.urandom(1 << 20)
        shard_files = {fs.path(f"shards/open.zarr/c/{i}"): blob[: 1000 + i] for i in range(objects)}
        fs.fs.pipe(shard_files)
        bank = real_bank(
            f"{root}/bank",
            shards=verify_shards,
            layers=4,
            segments=4,
            dim=64,
            storage_options=storage_options,
        )
        bank_files = [f for name in sorted(bank.catalog.shards) for f in bank.shard_files(name)]
        rows: dict[str, list[float]] = {
            k: []
            for k in (
                "records_one_by_one",
                "records_read_many",
                "records_head_first",
                "sizes_per_file",
                "sizes_listing",
                "move_one_by_one",
                "move_concurrent",
                "verify_per_file",
                "verify_now",
                "export_one_at_a_time",
                "export_concurrent",
            )
        }
        pulls = tempfile.mkdtemp(prefix="audistill-bench-store-")

        def export(workers: int) -> None:
            dst = os.path.join(pulls, uuid.uuid4().hex[:8])
            copy_bank(bank, dst, teachers={"wavlm": [1, 2]}, workers=workers)
            shutil.rmtree(dst)

        def old_verify_files() -> None:
            for f in bank_files:
                if bank.fs.exists(f):
                    bank.fs.size(f)

        def verify_now() -> None:
            report = verify_bank(bank, checksums=False)
            if not report.ok or report.files_checked != len(bank_files):
                raise RuntimeError(f"verify of the bench bank: {report.to_json()}")

        def old_move(src: str, dst: str) -> None:
            s, d = fs.path(src), fs.path(dst)
            for p in fs.fs.find(s):
                p = (
                    p.split("://", 1)[1] if "://" in p else p
                )  # find() may return protocol-prefixed paths
                fs.fs.copy(p, d + p[len(s) :])
            fs.fs.rm(s, recursive=True)

        with _latency(latency_ms):
            for k in range(repeats):
                rows["records_one_by_one"].append(_timed(lambda: [fs.read_bytes(n) for n in names]))
                rows["records_read_many"].append(_timed(lambda: list(fs.read_many(names))))
                rows["records_head_first"].append(
                    _timed(lambda: [fs_head.read_bytes(n) for n in names])
                )
                rels = [f"shards/open.zarr/c/{i}" for i in range(objects)]
                rows["sizes_per_file"].append(_timed(lambda rels=rels: [fs.size(r) for r in rels]))
                rows["sizes_listing"].append(_timed(lambda: fs.sizes_under("shards/open.zarr")))
                for label, move in (("move_one_by_one", old_move), ("move_concurrent", fs.move)):
                    src = f"shards/.tmp-{label}-{k}"
                    fs.fs.pipe({fs.path(f"{src}/c/{i}"): blob for i in range(objects)})
                    dst = f"shards/{label}-{k}"
                    rows[label].append(_timed(lambda src=src, dst=dst, move=move: move(src, dst)))
                rows["verify_per_file"].append(_timed(old_verify_files))
                rows["verify_now"].append(_timed(verify_now))
                rows["export_one_at_a_time"].append(_timed(lambda: export(1)))
                rows["export_concurrent"].append(_timed(lambda: export(8)))
        best = {k: min(v) for k, v in rows.items()}
    finally:
        try:
            shutil.rmtree(pulls, ignore_errors=True)
            fs.fs.rm(fs.root, recursive=True)
        finally:
            if proc is not None:
                proc.terminate()
    return {
        "url": url,
        "moto": proc is not None,
        "records": records,
        "objects": objects,
        "seconds": rows,
        "best": best,
        "verify_shards": verify_shards,
        "verify_files": len(bank_files),
        "latency_ms": latency_ms,
        "speedup": {
            "records": best["records_one_by_one"] / best["records_read_many"],
            "no_head": best["records_head_first"] / best["records_one_by_one"],
            "sizes": best["sizes_per_file"] / best["sizes_listing"],
            "move": best["move_one_by_one"] / best["move_concurrent"],
            "verify": best["verify_per_file"] / best["verify_now"],
            "export": best["export_one_at_a_time"] / best["export_concurrent"],
        },
    }


def register(app: typer.Typer) -> None:
    @app.command("bench-store")
    def bench_store(
        url: Annotated[
            str,
            typer.Option(
                "--url", help="s3://BUCKET/PREFIX to measure (default: moto on loopback)."
            ),
        ] = "",
        storage_options: StorageOpt = "",
        records: Annotated[int, typer.Option(help="Commit records read.")] = 500,
        objects: Annotated[
            int, typer.Option(help="Objects in the shard folder opened and moved.")
        ] = 54,
        repeats: Annotated[
            int, typer.Option(help="Runs of each, alternating (best reported).")
        ] = 2,
        verify_shards: Annotated[int, typer.Option(help="Shards of the bank verified.")] = 8,
        latency_ms: Annotated[
            float, typer.Option(help="Added to every request while timing (S3: 20-50 ms).")
        ] = 0.0,
        json_out: JsonOpt = False,
    ) -> None:
        """Object-store operations of a bank, now against before: commit records, size checks,
        commits, verify."""
        r = run_store_bench(
            url or None,
            parse_storage_options(storage_options),
            records,
            objects,
            repeats,
            verify_shards,
            latency_ms,
        )
        b = r["best"]
        t = Table("operation", "before (s)", "now (s)", "speed-up")
        t.add_row(
            f"read {records} commit records",
            f"{b['records_one_by_one']:.2f}",
            f"{b['records_read_many']:.2f}",
            f"{r['speedup']['records']:.1f}x",
        )
        t.add_row(
            f"read {records} commit records one by one: HEAD + GET each / one GET",
            f"{b['records_head_first']:.2f}",
            f"{b['records_one_by_one']:.2f}",
            f"{r['speedup']['no_head']:.1f}x",
        )
        t.add_row(
            f"sizes of a {objects}-file Zarr shard",
            f"{b['sizes_per_file']:.3f}",
            f"{b['sizes_listing']:.3f}",
            f"{r['speedup']['sizes']:.1f}x",
        )
        t.add_row(
            f"commit (move) {objects} x 1 MiB objects",
            f"{b['move_one_by_one']:.2f}",
            f"{b['move_concurrent']:.2f}",
            f"{r['speedup']['move']:.1f}x",
        )
        t.add_row(
            f"verify --quick, {r['verify_shards']} shards, {r['verify_files']} files",
            f"{b['verify_per_file']:.2f}",
            f"{b['verify_now']:.2f}",
            f"{r['speedup']['verify']:.1f}x",
        )
        t.add_row(
            f"export 2 of 4 layers, {r['verify_shards']} shards, to a local folder",
            f"{b['export_one_at_a_time']:.2f}",
            f"{b['export_concurrent']:.2f}",
            f"{r['speedup']['export']:.1f}x",
        )
        where = "moto on loopback" if r["moto"] else r["url"]
        where += (
            f", +{latency_ms:g} ms a request"
            if latency_ms
            else (" (no network latency: a lower bound)" if r["moto"] else "")
        )
        emit(r, t, json_out, [f"store: {where}; best of {repeats}"])
