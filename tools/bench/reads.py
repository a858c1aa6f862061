"""`audistill tools bench-reads`: how fast banks read back, per core, both layouts.

Builds one synthetic bank per layout (a 13-layer teacher, features with outlier channels, the
chosen codec), then reads every segment sequentially with all 13 layers and with 4 of them.
Reports segments/s and decoded MB/s (float32 output) and the cost of 4 layers relative to 13
(target: <= 40 %).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.table import Table

from audistill.shards.bank import Bank
from audistill.shards.catalog import TeacherRecord
from audistill.shards.codecs import get_codec
from audistill.shards.reader import BankReader
from audistill.shards.segments import SAMPLE_RATE, Segment, make_segment_id

from .common import emit, one_core

SPARSE = [3, 6, 9, 12]


def synthetic_layer(rng: np.random.Generator, frames: int, dim: int) -> np.ndarray:
    """Temporally correlated features with a few outlier channels (like real SSL layers)."""
    x = rng.standard_normal((frames, dim)).astype(np.float32)
    smooth = np.empty_like(x)
    smooth[0] = x[0]
    for t in range(1, frames):
        smooth[t] = 0.8 * smooth[t - 1] + 0.6 * x[t]
    smooth[:, :3] = smooth[:, :3] * 3 + 60.0
    return smooth


def build_bank(
    root: str,
    layout: str,
    *,
    codec: str,
    seconds: float,
    dim: int,
    num_layers: int,
    segment_seconds: float = 10.0,
    seed: int = 0,
) -> Bank:
    rng = np.random.default_rng(seed)
    c = get_codec(codec)
    bank = Bank.create(root, layout)
    layers = list(range(num_layers))
    bank.register_teacher(
        TeacherRecord(
            name="teacher",
            source="synthetic",
            dim=dim,
            frame_rate=50.0,
            codec=c.record(),
            layers=layers,
            num_layers=num_layers,
        )
    )
    state = None
    if c.needs_fit:
        sample = synthetic_layer(rng, 4096, dim)
        st = c.fit(sample)
        for layer in layers:
            bank.save_codec_state("teacher", layer, st)
        state = {k: torch.from_numpy(v) for k, v in st.items()}
    n_seg = max(1, int(seconds // segment_seconds))
    base = synthetic_layer(rng, int(segment_seconds * 50), dim)
    with bank.write_shard("shard-00000", ["teacher"]) as w:
        for k in range(n_seg):
            n = int(segment_seconds * SAMPLE_RATE)
            seg = Segment(
                make_segment_id(f"synthetic/{k}.wav"),
                f"synthetic/{k}.wav",
                0.0,
                segment_seconds,
                "speech",
                "synthetic",
                n,
            )
            shift = np.roll(base, k * 7, axis=0)
            feats = {
                layer: c.encode(torch.from_numpy(shift * (1 + 0.1 * layer)), state)
                for layer in layers
            }
            w.add(seg, np.zeros(n, np.int16), {"teacher": feats})
    return bank


def read_all(root: str, layers: list[int]) -> tuple[float, int, int]:
    """Seconds, segments and decoded float32 bytes for one sequential pass."""
    reader = BankReader(root, {"teacher": layers}, audio=True)
    t0 = time.perf_counter()
    n = nbytes = 0
    for sd in reader:
        n += 1
        nbytes += sum(x.nbytes for x in sd.features["teacher"].values())
    dt = time.perf_counter() - t0
    reader.close()
    return dt, n, nbytes


def read_crops(
    root: str, layers: list[int], crop_seconds: float = 2.0, n: int = 200, seed: int = 0
) -> float:
    """Random frame-aligned crops (the training loader's access pattern): crops per second."""
    reader = BankReader(root, {"teacher": layers}, audio=True)
    rng = np.random.default_rng(seed)
    shard = reader.shards[0]
    segs = reader.segments(shard)
    num = int(crop_seconds * SAMPLE_RATE)
    t0 = time.perf_counter()
    for _ in range(n):
        i = int(rng.integers(len(segs)))
        start = int(rng.integers(0, max(1, segs[i].num_samples - num) // 320 + 1)) * 320
        reader.read(shard, i, crop=(start, num))
    dt = time.perf_counter() - t0
    reader.close()
    return n / dt


def run_read_bench(
    *,
    seconds: float = 120.0,
    dim: int = 768,
    num_layers: int = 13,
    codec: str = "int8-channel",
    repeats: int = 2,
    workdir: str | None = None,
) -> dict:
    results = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, one_core():
        for layout in ("zarr", "webdataset"):
            root = str(Path(tmp) / layout)
            bank = build_bank(
                root, layout, codec=codec, seconds=seconds, dim=dim, num_layers=num_layers
            )
            row = {"layout": layout, "codec": codec, "bytes": bank.catalog.bytes}
            for label, layers in (("all", list(range(num_layers))), ("sparse4", SPARSE)):
                best = min((read_all(root, layers) for _ in range(repeats)), key=lambda r: r[0])
                dt, n, nbytes = best
                row[label] = {
                    "layers": len(layers),
                    "seconds": dt,
                    "segments_per_s": n / dt,
                    "decoded_mb_per_s": nbytes / dt / 1e6,
                    "segments": n,
                }
            row["sparse4_cost_vs_all"] = row["sparse4"]["seconds"] / row["all"]["seconds"]
            row["crops_per_s_sparse4"] = max(read_crops(root, SPARSE) for _ in range(repeats))
            row["target_sparse4_le_40pct"] = row["sparse4_cost_vs_all"] <= 0.40
            results.append(row)
    return {
        "bench": "reads",
        "audio_seconds": seconds,
        "dim": dim,
        "num_layers": num_layers,
        "rows": results,
    }


def register(app: typer.Typer) -> None:
    @app.command("bench-reads")
    def bench_reads(
        seconds: Annotated[
            float, typer.Option(help="Seconds of audio in the synthetic bank.")
        ] = 120.0,
        dim: Annotated[int, typer.Option(help="Feature dimension.")] = 768,
        num_layers: Annotated[
            int, typer.Option("--num-layers", help="Layers stored per frame.")
        ] = 13,
        codec: Annotated[str, typer.Option(help="Codec of the bank.")] = "int8-channel",
        json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Segments/s and decoded MB/s per core, both layouts, all layers vs 4 of them."""
        res = run_read_bench(seconds=seconds, dim=dim, num_layers=num_layers, codec=codec)
        table = Table(
            "layout",
            "codec",
            "layers",
            "segments/s",
            "decoded MB/s",
            "4-layer cost vs all",
            "≤ 40 %",
            "2 s crops/s (4 layers)",
        )
        for r in res["rows"]:
            for label in ("all", "sparse4"):
                x = r[label]
                cost = f"{r['sparse4_cost_vs_all']:.0%}" if label == "sparse4" else ""
                ok = ("yes" if r["target_sparse4_le_40pct"] else "NO") if label == "sparse4" else ""
                crops = f"{r['crops_per_s_sparse4']:.0f}" if label == "sparse4" else ""
                table.add_row(
                    r["layout"],
                    r["codec"],
                    str(x["layers"]),
                    f"{x['segments_per_s']:.1f}",
                    f"{x['decoded_mb_per_s']:.0f}",
                    cost,
                    ok,
                    crops,
                )
        emit(
            res, table, json_out, [f"{seconds:g} s of audio, {num_layers} layers x {dim}, one core"]
        )
