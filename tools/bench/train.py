"""`audistill tools bench-train`: training from the bank vs with the teachers run online.

In one run, with the same student and teachers (random transformers models of realistic shapes,
made from a config; nothing is downloaded):

(a) training steps/s and audio-seconds/s reading targets from a synthetic bank;
(b) the same training with the teachers run in the loop on the same segments (same crops);
(c) the data loader alone with N workers (micro-batches/s) against the rate (a) consumes;
(d) the trainer's peak RSS on the bank and on a bank 10x larger (fresh processes).

Targets: (a)/(b) > 1; the loader with <= 4 workers keeps up with (a); peak RSS on the 10x bank
within 20 % of the base bank's. Each is reported met / not met.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from audistill.shards.devices import resolve_device
from audistill.shards.segments import SAMPLE_RATE
from audistill.tools.cli.options import DeviceOpt, JsonOpt

from .common import emit


@dataclass(frozen=True)
class Preset:
    teachers: tuple  # (name, hidden, blocks, heads, hz, home)
    segments: int
    seconds: float
    crop: float
    batch_seconds: float
    steps: int
    online_steps: int
    workers: tuple


PRESETS = {
    "tiny": Preset(
        (("speechy", 64, 4, 2, 50, "speech"), ("soundy", 96, 4, 2, 25, "sound")),
        16,
        3.0,
        2.0,
        8.0,
        6,
        4,
        (0, 1, 2),
    ),
    "gpu": Preset(
        (("wavlm_base_plus", 768, 12, 12, 50, "speech"), ("sound25hz", 1024, 12, 16, 25, "sound")),
        48,
        10.0,
        5.0,
        120.0,
        40,
        8,
        (1, 2, 4),
    ),
}


def _make_teacher_folder(
    root: Path, name: str, hidden: int, blocks: int, heads: int, hz: int, conv: int = 512
) -> Path:
    """A random-weight WavLM (50 Hz) or wav2vec2 (25 Hz: one more stride-2 conv) saved offline."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WavLMConfig,
        WavLMModel,
    )

    torch.manual_seed(len(name))
    common = dict(
        hidden_size=hidden,
        num_hidden_layers=blocks,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    if hz == 50:
        model = WavLMModel(WavLMConfig(**common, conv_dim=(conv,) * 7))
    else:
        model = Wav2Vec2Model(
            Wav2Vec2Config(
                **common,
                conv_dim=(conv,) * 8,
                conv_stride=(5, 2, 2, 2, 2, 2, 2, 2),
                conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
            )
        )
    out = root / name
    model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(out)
    return out


def _teachers(preset: Preset, root: Path, device: str, codec: str):
    from audistill.extract.spec import TeacherSpec
    from audistill.extract.teachers import load_teacher

    out = []
    for name, hidden, blocks, heads, hz, home in preset.teachers:
        folder = _make_teacher_folder(
            root, name, hidden, blocks, heads, hz, 512 if hidden >= 512 else 32
        )
        spec = TeacherSpec(
            name=name,
            source=str(folder),
            kind="hf",
            layers="sparse:4",
            dtype="bf16",
            home_domain=home,
            codec=codec,
        )
        out.append(load_teacher(spec, device))
    return out


def _config(
    bank: str, run_dir: Path, size: str, device: str, preset: Preset, workers: int, names
) -> dict:
    return {
        "run": {"name": "bench", "out_dir": str(run_dir), "device": device, "resume": False},
        "student": {"size": size},
        "bank": {"root": bank},
        "data": {
            "crop_seconds": preset.crop,
            "batch_seconds": preset.batch_seconds,
            "num_workers": workers,
            "shuffle_buffer": 64,
        },
        "teachers": [{"name": n, "num_targets": 4} for n in names],
        "optim": {"lr": 1e-4, "warmup_steps": 0, "max_steps": 10**6},
        "log": {"every": 10**6, "val_every": 10**6, "ckpt_every": 10**6, "tensorboard": False},
    }


def _rates(out: dict, skip: int) -> dict:
    st, au, wt = out["step_seconds"][skip:], out["audio_seconds"][skip:], out["wait_seconds"]
    total = sum(st)
    return {
        "steps": len(st),
        "steps_per_s": len(st) / total,
        "audio_s_per_s": sum(au) / total,
        "loader_wait_frac": sum(wt[skip:]) / total,
    }


def _loader_rate(cfg, workers: int, batches: int) -> float:
    import torch

    from audistill.train import ddp, loop
    from audistill.train.data import make_loader

    model, infos, shards, _ = loop.build(cfg, torch.device("cpu"))
    spec = loop.loader_spec(cfg, model, infos, shards, ddp.Dist(), False)
    it = iter(make_loader(spec, 0, 0, workers, 4, False, epochs=None))
    for _ in range(max(1, workers)):  # start-up: every worker's first batch
        next(it)
    t0 = time.perf_counter()
    for _ in itertools.islice(it, batches):
        pass
    return batches / (time.perf_counter() - t0)


class RandomTeacher:
    """A preset teacher's shapes with random features (the loader moves bytes; their values do
    not matter), so a loader-only bank is made in seconds on any machine."""

    def __init__(self, name: str, dim: int, hz: int, home: str, blocks: int, codec: str):
        import torch

        self.name, self.dim, self.frame_rate, self.home_domain = name, dim, hz, home
        self.num_layers, self.codec = blocks + 1, codec
        self.layers = [blocks * k // 4 for k in range(1, 5)]
        self.gen = torch.Generator().manual_seed(dim)

    def record(self):
        from audistill.shards.catalog import TeacherRecord
        from audistill.shards.codecs import get_codec

        return TeacherRecord(
            name=self.name,
            source=f"random/{self.name}",
            dim=self.dim,
            frame_rate=float(self.frame_rate),
            codec=get_codec(self.codec).record(),
            layers=list(self.layers),
            num_layers=self.num_layers,
            home_domain=self.home_domain,
        )

    def extract(self, wave, lengths):
        import torch

        n = int(lengths[0]) * self.frame_rate // SAMPLE_RATE
        return (
            {la: torch.randn(1, n, self.dim, generator=self.gen) for la in self.layers},
            torch.tensor([n]),
        )


def _worker_cpu_s() -> float | None:
    """CPU seconds used so far by this process's live children (the loader's workers); None
    where /proc is not there."""
    me, tick, total = os.getpid(), os.sysconf("SC_CLK_TCK"), 0.0
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _loader_timed(cfg, workers: int, batches: int) -> dict:
    """Wall and CPU time of ``batches`` micro-batches after every worker's first one."""
    import torch

    from audistill.train import ddp, loop
    from audistill.train.data import make_loader

    model, infos, shards, _ = loop.build(cfg, torch.device("cpu"))
    spec = loop.loader_spec(cfg, model, infos, shards, ddp.Dist(), False)
    it = iter(make_loader(spec, 0, 0, workers, 4, False, epochs=None))
    for _ in range(max(1, workers)):
        next(it)
    w0, t0, c0 = _worker_cpu_s(), time.perf_counter(), time.process_time()
    audio = 0.0
    for b in itertools.islice(it, batches):
        audio += float(b["lengths"].sum()) / SAMPLE_RATE
    wall, cpu, w1 = time.perf_counter() - t0, time.process_time() - c0, _worker_cpu_s()
    out = {
        "batches": batches,
        "batches_per_s": batches / wall,
        "audio_s_per_s": audio / wall,
        "main_cpu_s_per_batch": cpu / batches,
    }
    if workers == 0:
        out["batches_per_cpu_s"] = batches / cpu
    elif w0 is not None and w1 is not None and w1 > w0:
        out["batches_per_worker_cpu_s"] = batches / (w1 - w0)
    del it
    return out


def run_loader_bench(
    size: str, workers: tuple, batches: int, codec: str = "float16", layout: str = "zarr"
) -> dict:
    """The loader alone on the preset's shapes: in this process on one thread (batches per
    CPU-second: what one worker process can deliver) and with each worker count."""
    import numcodecs
    import torch

    from audistill.train.config import from_dict

    from .common import one_core
    from .synth import write_bank

    preset = PRESETS["tiny" if size == "tiny" else "gpu"]
    res: dict = {
        "loader_only": True,
        "preset": "tiny" if size == "tiny" else "gpu",
        "codec": codec,
        "layout": layout,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "batch_seconds": preset.batch_seconds,
        "crop_seconds": preset.crop,
    }
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        teachers = [
            RandomTeacher(n, hidden, hz, home, blocks, codec)
            for n, hidden, blocks, _, hz, home in preset.teachers
        ]
        write_bank(
            str(Path(tmp) / "bank"),
            teachers,
            4,
            preset.segments // 4,
            (preset.seconds * 0.8, preset.seconds * 1.2),
            layout=layout,
        )
        raw = _config(
            str(Path(tmp) / "bank"),
            Path(tmp) / "runs",
            "tiny",
            "cpu",
            preset,
            0,
            [t.name for t in teachers],
        )
        cfg = from_dict(raw)
        threads = numcodecs.blosc.use_threads
        numcodecs.blosc.use_threads = False  # one thread, as in a loader worker
        try:
            with one_core():
                res["in_process"] = _loader_timed(cfg, 0, batches)
        finally:
            numcodecs.blosc.use_threads = threads
        res["workers"] = {
            str(w): _loader_timed(cfg, w, batches * max(1, w)) for w in workers if w > 0
        }
    per = res["in_process"]["batches_per_cpu_s"]
    res["per_worker_batches_per_s"] = per
    res["per_worker_audio_s_per_s"] = (
        per * res["in_process"]["audio_s_per_s"] / res["in_process"]["batches_per_s"]
    )
    res["targets"] = {"per_worker_ge_3_batches_per_s": per >= 3.0}
    return res


def _loader_table(r: dict) -> Table:
    t = Table(
        title=f"bench-train --loader-only: {r['preset']} preset ({r['layout']}, {r['codec']}, "
        f"{r['batch_seconds']:.0f} s batches of {r['crop_seconds']:.0f} s crops)"
    )
    for c in ("measure", "value", "note"):
        t.add_column(c)
    ip = r["in_process"]
    t.add_row(
        "one process, one thread",
        f"{ip['batches_per_cpu_s']:.2f} batches/CPU-s",
        f"{r['per_worker_audio_s_per_s']:.0f} audio-s per CPU-s "
        f"({'met' if r['targets']['per_worker_ge_3_batches_per_s'] else 'NOT met'}: >= 3 batches/s "
        "per worker)",
    )
    for w, v in r["workers"].items():
        per = v.get("batches_per_worker_cpu_s")
        t.add_row(
            f"{w} workers",
            f"{v['batches_per_s']:.2f} batches/s",
            f"{v['audio_s_per_s']:.0f} audio-s/s"
            + (f", {per:.2f} batches per worker CPU-s" if per else ""),
        )
    return t


def _step_model(size: str, preset: Preset, device):
    """The Distiller the loop trains (student, heads of the preset's teachers), on ``device``."""
    from audistill.train.heads import Heads, Target, sparse_map
    from audistill.train.loop import Distiller
    from audistill.train.model import Student
    from audistill.train.sizes import student_config
    from audistill.train.targets import TeacherInfo

    scfg = student_config(size)
    targets, infos, dims = [], {}, {}
    for name, hidden, blocks, _, hz, home in preset.teachers:
        pairs = sparse_map(scfg.depth, blocks, 4)
        targets += [Target(name, a, b) for a, b in pairs]
        infos[name] = TeacherInfo(name, hidden, SAMPLE_RATE / hz, home, tuple(b for _, b in pairs))
        dims[name] = hidden
    return Distiller(Student(scfg), Heads(targets, scfg.dim, dims), infos, 10.0).to(device), infos


def _step_batch(infos, batch_seconds: float, crop: float, device) -> dict:
    """A micro-batch of ``batch_seconds`` in ``crop``-second items, every teacher present."""
    import torch

    from audistill.train.loop import to_device

    b, n = max(1, round(batch_seconds / crop)), int(crop * SAMPLE_RATE)
    g = torch.Generator().manual_seed(0)
    batch = {
        "wave": torch.randn(b, n, generator=g) * 0.1,
        "lengths": torch.full((b,), n),
        "domains": [("speech", "sound")[k % 2] for k in range(b)],
        "global_items": b,
        "targets": {},
        "target_lengths": {},
        "present": {},
    }
    for name, i in infos.items():
        t = int(n // i.hop)
        batch["targets"][name] = {la: torch.randn(b, t, i.dim, generator=g) for la in i.layers}
        batch["target_lengths"][name] = torch.full((b,), t)
        batch["present"][name] = torch.ones(b, dtype=torch.bool)
    return to_device(batch, device)


def matmul_peak(device) -> float:
    """The device's measured dense matmul rate (FLOP/s): bf16 on CUDA, float32 on the CPU."""
    import torch

    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    best = float("inf")
    for _ in range(3):
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(10 if cuda else 3):
            a @ b
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - t0) / (10 if cuda else 3))
    return 2 * n**3 / best


def step_bench(
    size: str,
    device: str,
    batch_seconds: float,
    crop: float,
    steps: int,
    compile_student: bool = False,
    peak: float | None = None,
) -> dict:
    """The student's update alone (the loop's ``update``: bf16 autocast and fused AdamW on CUDA) on
    a batch held on the device: steps/s, FLOPs per step (FlopCounterMode) and the share of the
    device's measured matmul peak reached (MFU)."""
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from audistill.train import ddp
    from audistill.train.loop import update

    dev = torch.device(device)
    torch.manual_seed(0)
    model, infos = _step_model(size, PRESETS["gpu"], dev)
    batch = _step_batch(infos, batch_seconds, crop, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else contextlib.nullcontext()
    )
    d = ddp.Dist()
    with FlopCounterMode(
        display=False
    ) as fc:  # counted eager: the same arithmetic a compiled step does
        update(model, model, [batch], opt, 1.0, d, amp)
    flops = fc.get_total_flops()
    if compile_student:
        model.student.compile()
    for _ in range(2 if dev.type == "cuda" else 1):  # warm-up (and compilation)
        update(model, model, [batch], opt, 1.0, d, amp)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda *_: None)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        total, _, _ = update(model, model, [batch], opt, 1.0, d, amp)
    sync(dev)
    dt = (time.perf_counter() - t0) / steps
    peak = peak or matmul_peak(dev)
    return {
        "batch_seconds": batch_seconds,
        "items": len(batch["domains"]),
        "steps_per_s": 1 / dt,
        "audio_s_per_s": batch_seconds / dt,
        "tflop_per_step": flops / 1e12,
        "tflop_per_s": flops / dt / 1e12,
        "peak_tflop_per_s": peak / 1e12,
        "mfu": flops / dt / peak,
        "loss_finite": bool(torch.isfinite(total)),
    }


def run_step_bench(
    size: str, device: str, seconds: tuple, steps: int, compile_student: bool
) -> dict:
    import torch

    from audistill.train.model import count_parameters
    from audistill.train.sizes import student_config

    device = resolve_device(device)
    peak = matmul_peak(torch.device(device))
    crop = 10.0
    rows = [
        step_bench(size, device, s, min(crop, s), steps, compile_student, peak) for s in seconds
    ]
    from audistill.train.model import Student

    return {
        "step_only": True,
        "size": size,
        "device": device,
        "compile": compile_student,
        "params": count_parameters(Student(student_config(size))),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "peak_tflop_per_s": peak / 1e12,
        "rows": rows,
    }


def _step_table(r: dict) -> Table:
    t = Table(
        title=f"bench-train --step-only: {r['size']} student ({r['params'] / 1e6:.1f} M) on "
        f"{r['gpu'] or r['device']}{', compiled' if r['compile'] else ''}; measured peak "
        f"{r['peak_tflop_per_s']:.3g} TFLOP/s"
    )
    for c in ("batch", "steps/s", "audio-s/s", "TFLOP/step", "TFLOP/s", "MFU"):
        t.add_column(c)
    for x in r["rows"]:
        t.add_row(
            f"{x['batch_seconds']:.0f} s ({x['items']} items)",
            f"{x['steps_per_s']:.3f}",
            f"{x['audio_s_per_s']:.0f}",
            f"{x['tflop_per_step']:.3g}",
            f"{x['tflop_per_s']:.3g}",
            f"{100 * x['mfu']:.1f} %",
        )
    return t


def rss_probe(cfg_json: str, steps: int) -> None:
    """Run in a fresh process: a few training steps, then print the trainer's peak RSS (MB) and
    its children's largest ru_maxrss (data-loader workers; at least the trainer's RSS at fork)."""
    import resource

    from audistill.train.config import from_dict
    from audistill.train.loop import train

    train(from_dict(json.loads(cfg_json)), stop_after=steps)
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
    status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
    hwm = [int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM:")]
    me = hwm[0] / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"rss_mb": me, "worker_rss_mb": kids}))


def _rss(raws: list[dict], steps: int) -> list[dict]:
    """Peak RSS of fresh trainer processes, one per config, run side by side."""
    procs = []
    for raw in raws:
        code = (
            "from audistill.tools.bench.train import rss_probe; "
            f"rss_probe({json.dumps(json.dumps(raw))}, {steps})"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out = []
    for p in procs:
        so, se = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"RSS probe failed: {se[-2000:]}")
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def run_bench(
    size: str,
    device: str,
    workers: tuple | None = None,
    steps: int | None = None,
    codec: str = "float16",
) -> dict:
    import torch

    from audistill.train.config import from_dict
    from audistill.train.loop import train
    from audistill.train.online import OnlineTeachers

    from .synth import write_bank

    device = resolve_device(device)
    preset = PRESETS["tiny" if size == "tiny" else "gpu"]
    workers = workers or preset.workers
    n_steps = steps or preset.steps
    res: dict = {
        "size": size,
        "device": device,
        "codec": codec,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        teachers = _teachers(preset, tmp / "models", device, codec)
        names = [t.name for t in teachers]
        shards = 4
        per = preset.segments // shards
        made: list = []  # the 10x bank repeats the base bank's segments under new ids
        write_bank(
            str(tmp / "bank"),
            teachers,
            shards,
            per,
            (preset.seconds * 0.8, preset.seconds * 1.2),
            device=device,
            cache=made,
        )  # the teachers' specs hold the codec
        write_bank(
            str(tmp / "bank10"),
            teachers,
            shards * 10,
            per,
            (preset.seconds * 0.8, preset.seconds * 1.2),
            device=device,
            unique=len(made),
            cache=made,
        )
        res["setup_s"] = time.perf_counter() - t0
        res["bank_minutes"] = preset.segments * preset.seconds / 60
        res["teachers"] = [
            {"name": t.name, "dim": t.dim, "hz": t.frame_rate, "layers": list(t.layers)}
            for t in teachers
        ]
        nw = (
            min(4, os.cpu_count() or 1)
            if device.startswith("cuda")
            else min(2, os.cpu_count() or 1)
        )
        raw = _config(str(tmp / "bank"), tmp / "runs", size, device, preset, nw, names)
        skip = 3
        cached = train(from_dict(raw), stop_after=n_steps + skip)
        res["cached"] = _rates(cached, skip)
        res["batch_seconds"] = preset.batch_seconds
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        raw_o = {**raw, "run": {**raw["run"], "name": "bench_online"}}
        online = train(
            from_dict(raw_o), stop_after=preset.online_steps + 2, online=OnlineTeachers(teachers)
        )
        res["online"] = _rates(online, 2)
        res["cached_over_online"] = res["cached"]["steps_per_s"] / res["online"]["steps_per_s"]
        res["loader"] = {
            str(w): _loader_rate(from_dict(raw), w, 3 * max(1, w) + 3) for w in workers
        }
        need = res["cached"]["steps_per_s"]  # micro-batches/s the trainer consumed (grad_accum = 1)
        best = max(v for k, v in res["loader"].items() if int(k) <= 4)
        res["loader_needed_batches_per_s"] = need
        res["loader_best_le4_workers"] = best
        rss_raw = {
            **raw,
            "student": {"size": "tiny"},
            "run": {**raw["run"], "device": "cpu", "name": "rss"},
        }
        rss_10x = {
            **rss_raw,
            "bank": {"root": str(tmp / "bank10")},
            "run": {**rss_raw["run"], "name": "rss10x"},
        }
        res["rss_base"], res["rss_10x"] = _rss([rss_raw, rss_10x], 3)
        res["rss_growth"] = res["rss_10x"]["rss_mb"] / res["rss_base"]["rss_mb"] - 1
        res["targets"] = {
            "cached_faster_than_online": res["cached_over_online"] > 1.0,
            "loader_keeps_up_le4_workers": best >= need,
            "rss_flat_10x_bank": res["rss_growth"] <= 0.20,
        }
    return res


def _table(r: dict) -> Table:
    t = Table(
        title=f"bench-train: {r['size']} student on {r['gpu'] or r['device']} ({r['codec']} bank, "
        f"{r['bank_minutes']:.1f} min audio, {r['batch_seconds']:.0f} s/step)"
    )
    for c in ("measure", "value", "note"):
        t.add_column(c)
    c, o = r["cached"], r["online"]
    t.add_row(
        "(a) from bank: steps/s",
        f"{c['steps_per_s']:.3f}",
        f"{c['audio_s_per_s']:.0f} audio-s/s, loader wait {100 * c['loader_wait_frac']:.0f} %",
    )
    t.add_row(
        "(b) teachers online: steps/s",
        f"{o['steps_per_s']:.3f}",
        f"{o['audio_s_per_s']:.0f} audio-s/s",
    )
    t.add_row(
        "(a)/(b)",
        f"{r['cached_over_online']:.2f}x",
        "met" if r["targets"]["cached_faster_than_online"] else "NOT met",
    )
    for w, v in r["loader"].items():
        t.add_row(
            f"(c) loader alone, {w} workers",
            f"{v:.2f} batches/s",
            f"{v / max(1, int(w)):.2f} per worker",
        )
    t.add_row(
        "(c) needed by (a)",
        f"{r['loader_needed_batches_per_s']:.2f} batches/s",
        "keeps up" if r["targets"]["loader_keeps_up_le4_workers"] else "I/O bound: NOT met",
    )
    t.add_row(
        "(d) peak RSS, bank",
        f"{r['rss_base']['rss_mb']:.0f} MB",
        f"worker {r['rss_base']['worker_rss_mb']:.0f} MB",
    )
    t.add_row(
        "(d) peak RSS, 10x bank",
        f"{r['rss_10x']['rss_mb']:.0f} MB",
        f"{100 * r['rss_growth']:+.1f} % "
        f"({'met' if r['targets']['rss_flat_10x_bank'] else 'NOT met'})",
    )
    for x in r.get("step", {}).get("rows", []):
        t.add_row(
            f"(e) step alone, {x['batch_seconds']:.0f} s batch",
            f"{x['steps_per_s']:.3f} steps/s",
            f"{x['tflop_per_step']:.3f} TFLOP/step, MFU {100 * x['mfu']:.1f} % of "
            f"{x['peak_tflop_per_s']:.1f} TFLOP/s measured",
        )
    return t


def bench_train(
    size: Annotated[
        str, typer.Option("--size", help="Student size: tiny (CPU) ... base, large.")
    ] = "tiny",
    device: DeviceOpt = "auto",
    workers: Annotated[
        str, typer.Option("--workers", help="Loader worker counts to try, e.g. 1,2,4.")
    ] = "",
    steps: Annotated[
        int, typer.Option("--steps", help="Timed steps from the bank (0 = preset).")
    ] = 0,
    codec: Annotated[str, typer.Option("--codec", help="Bank codec.")] = "float16",
    loader_only: Annotated[
        bool,
        typer.Option(
            "--loader-only", help="Only the data loader (no model, no GPU): batches/s per worker."
        ),
    ] = False,
    layout: Annotated[
        str, typer.Option("--layout", help="Bank layout for --loader-only.")
    ] = "zarr",
    batches: Annotated[
        int, typer.Option("--batches", help="Timed batches per worker (--loader-only).")
    ] = 8,
    step_only: Annotated[
        bool,
        typer.Option(
            "--step-only",
            help="Only the student's update on a batch held on the device: FLOPs, MFU.",
        ),
    ] = False,
    step_seconds: Annotated[
        str, typer.Option("--step-seconds", help="Batch seconds for the step's FLOPs and MFU.")
    ] = "120,800",
    compile_student: Annotated[
        bool, typer.Option("--compile", help="torch.compile the student.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Training throughput from the bank vs teachers online, the loader alone, RSS vs bank size,
    the student step's FLOPs and MFU."""
    ws = tuple(int(x) for x in workers.split(",")) if workers else None
    secs = tuple(float(x) for x in step_seconds.split(","))
    if step_only:
        r = run_step_bench(size, device, secs, steps or 3, compile_student)
        emit(
            r,
            None if as_json else _step_table(r),
            as_json,
            ["MFU: the step's FLOPs x steps/s / the measured peak"],
        )
        return
    if loader_only:
        r = run_loader_bench(size, ws or (1, 2), batches, codec, layout)
        emit(
            r,
            None if as_json else _loader_table(r),
            as_json,
            ["per-worker figure: the loader in one process on one thread, batches per CPU-second"],
        )
        return
    r = run_bench(size, device, ws, steps or None, codec)
    cpu_secs = (
        PRESETS["tiny" if size == "tiny" else "gpu"].batch_seconds,
    )  # the CPU: one small batch
    r["step"] = run_step_bench(
        size, r["device"], secs if r["device"].startswith("cuda") else cpu_secs, 3, compile_student
    )
    emit(
        r,
        None if as_json else _table(r),
        as_json,
        [
            f"targets: {json.dumps(r['targets'])}; RSS probes use a tiny student on the CPU (data "
            "path only)"
        ],
    )


def register(app: typer.Typer) -> None:
    app.command("bench-train")(bench_train)
