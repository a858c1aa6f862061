"""The training loop, top to bottom: setup, loop, checkpoint. No trainer classes.

``train(cfg)`` runs one process's share; under torchrun every process calls it (DDP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from audistill.shards.bank import Bank
from audistill.shards.reader import crop_hop
from audistill.shards.segments import SAMPLE_RATE

from . import checkpoint, ddp
from .config import RunConfig, resolved
from .data import BankBatches, LoaderSpec, lcm, make_loader
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .export import student_weights
from .heads import Heads
from .logs import RunLog
from .losses import distill_loss
from .model import Student, count_parameters
from .sizes import student_config
from .targets import TeacherInfo, open_reader, plan_targets


class Distiller(nn.Module):
    """Student + heads; ``forward(batch, norm)`` is the loss of one micro-batch."""

    def __init__(
        self,
        student: Student,
        heads: Heads,
        infos: dict[str, TeacherInfo],
        omega: float,
        target_stats: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        super().__init__()
        self.student, self.heads, self.omega = student, heads, omega
        self.hops = {n: i.hop for n, i in infos.items()}
        self.homes = {n: i.home for n, i in infos.items()}
        self.normalized = sorted(target_stats or {})
        for (t, layer), (mean, std) in (target_stats or {}).items():
            self.register_buffer(f"tmean__{t}__{layer}", mean, persistent=False)
            self.register_buffer(f"tstd__{t}__{layer}", std, persistent=False)

    def normalize(self, batch: dict) -> dict:
        """Targets standardized per channel with the bank's statistics (when configured)."""
        if not self.normalized:
            return batch
        targets = {t: dict(d) for t, d in batch["targets"].items()}
        for t, layer in self.normalized:
            if t in targets and layer in targets[t]:
                mean, std = (
                    getattr(self, f"tmean__{t}__{layer}"),
                    getattr(self, f"tstd__{t}__{layer}"),
                )
                targets[t][layer] = (targets[t][layer] - mean) / std  # (B, T, Dt)
        return {**batch, "targets": targets}

    def forward(self, batch: dict, norm: float, against: dict | None = None):
        """``against``: other ``targets`` / ``target_lengths`` / ``present`` for the same items;
        their loss from the same student outputs is added to the logs as ``loss_against``
        (detached) - one forward, so a difference is the targets' alone."""
        hidden = self.student(
            batch["wave"], batch.get("host_lengths", batch["lengths"])
        )  # depth + 1 x (B, T, D)
        loss, logs = self._loss(hidden, self.normalize(batch), norm)
        if against is not None:
            with torch.no_grad():
                other, _ = self._loss(
                    [h.detach() for h in hidden], self.normalize({**batch, **against}), norm
                )
            logs["loss_against"] = other
        return loss, logs

    def _loss(self, hidden: list[torch.Tensor], batch: dict, norm: float):
        s_len = batch["lengths"] // self.student.cfg.hop
        return distill_loss(
            hidden,
            s_len,
            self.student.cfg.hop,
            self.heads,
            batch,
            self.hops,
            self.homes,
            self.omega,
            norm,
        )


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device`` (asynchronous copies from pinned memory on CUDA); targets
    arrive in their bank's exact dtype (e.g. float16) and become float32 there, values unchanged."""
    nb = device.type == "cuda"
    out = dict(batch, host_lengths=batch["lengths"])
    for k in ("wave", "lengths", "full_wave", "full_lengths", "crop_start"):
        if k in batch:
            out[k] = batch[k].to(device, non_blocking=nb)
    out["targets"] = {
        t: {la: z.to(device, non_blocking=nb).float() for la, z in d.items()}
        for t, d in batch["targets"].items()
    }
    out["target_lengths"] = {
        t: v.to(device, non_blocking=nb) for t, v in batch["target_lengths"].items()
    }
    return out


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def build(cfg: RunConfig, device: torch.device, online=None):
    """Student, heads, teacher infos, reader-checked shards; stops early on any bank mismatch."""
    scfg = student_config(
        cfg.student.size,
        dropout=cfg.student.dropout,
        **({"stride": cfg.student.stride} if cfg.student.stride else {}),
    )
    bank = Bank.open(cfg.bank.root, cfg.bank.storage_options or None)
    catalog = bank.catalog if online is None else SimpleNamespace(teachers=online.records())
    targets, infos = plan_targets(cfg.teachers, catalog, scfg.depth, cfg.run.stage)
    val = list(cfg.bank.val_shards)
    train_shards = list(cfg.bank.shards) or [s for s in sorted(bank.catalog.shards) if s not in val]
    if not train_shards:
        raise ConfigError(f"bank {cfg.bank.root} has no training shards")
    if online is None:
        open_reader(
            bank, infos, train_shards + val
        )  # every needed layer in every shard, or stop here
    student = Student(scfg)
    heads = Heads(
        targets, scfg.dim, {n: i.dim for n, i in infos.items()}, cfg.distill.head_hidden or None
    )
    omega = 1.0 if cfg.run.stage == 2 else cfg.distill.omega
    stats = target_stats(bank, targets, cfg.bank.root) if cfg.distill.normalize_targets else None
    model = Distiller(student, heads, infos, omega, stats).to(device)
    return model, infos, train_shards, val


def target_stats(
    bank: Bank, targets, root: str
) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and std of every target layer from the catalog; all missing ones named at
    once."""
    out, missing = {}, []
    for tgt in targets:
        s = bank.catalog.stats.get(tgt.teacher, {}).get(str(tgt.teacher_layer))
        if s is None:
            missing.append(f"{tgt.teacher} layer {tgt.teacher_layer}")
            continue
        std = torch.tensor(s["std"], dtype=torch.float32).clamp(min=1e-5)
        out[(tgt.teacher, tgt.teacher_layer)] = (torch.tensor(s["mean"], dtype=torch.float32), std)
    if missing:
        raise ConfigError(
            f"distill.normalize_targets needs statistics the bank lacks ({', '.join(missing)}): "
            f"run `audistill shards stats {root}` first"
        )
    return out


def loader_spec(
    cfg: RunConfig,
    model: Distiller,
    infos,
    shards,
    d: ddp.Dist,
    online: bool,
    bank_targets: bool = False,
) -> LoaderSpec:
    """What the loader reads: the bank's targets unless ``online`` (then the whole segments'
    audio for the teachers), or both with ``bank_targets``."""
    hops = [i.hop for i in infos.values() if abs(i.hop - round(i.hop)) < 1e-6]
    align = lcm(model.student.cfg.hop, crop_hop(hops))
    aug = dataclasses.asdict(cfg.augment)
    active = aug["gain_db"] or aug["noise_files"] or aug["time_mask_seconds"]
    return LoaderSpec(
        root=cfg.bank.root,
        teachers={n: list(i.layers) for n, i in infos.items()}
        if bank_targets or not online
        else {},
        shards=tuple(shards),
        crop_samples=int(cfg.data.crop_seconds * SAMPLE_RATE) // align * align or align,
        align_hop=align,
        batch_seconds=cfg.data.batch_seconds,
        shuffle_buffer=cfg.data.shuffle_buffer,
        seed=cfg.run.seed,
        rank=d.rank,
        world=d.world,
        accum=cfg.data.grad_accum,
        storage_options=cfg.bank.storage_options or None,
        full_audio=online,
        augment=aug if active else None,
    )


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_from(model: Distiller, ckpt: str) -> None:
    """Student weights from a training checkpoint or an exported student folder (e.g. upscaled)."""
    tensors = student_weights(ckpt)
    missing, unexpected = model.student.load_state_dict(tensors, strict=False)
    if [k for k in missing if not k.startswith("mel.")] or unexpected:
        raise CheckpointError(f"{ckpt}: student weights do not fit this student size")


def train(
    cfg: RunConfig,
    stop_after: int | None = None,
    online=None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train; returns a summary. ``stop_after`` ends after that many steps of this call (tests,
    benchmarks); ``online`` (an ``online.OnlineTeachers``) computes targets in the loop;
    ``progress(step, max_steps, row)`` is called on the main rank with every logged train row."""
    d, device = ddp.setup(cfg.run.device)
    if online is None and cfg.run.online_teachers:
        from .online import OnlineTeachers

        online = OnlineTeachers.from_spec_file(cfg.run.online_teachers, device)
    seed_all(
        cfg.run.seed
    )  # after loading teachers (which may draw random numbers): same init as cached
    model, infos, shards, val_shards = build(cfg, device, online)
    ckpt_dir = cfg.run_dir / "checkpoints"
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        fused=device.type == "cuda",
    )  # one kernel per step for every parameter
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.optim.warmup_steps, cfg.optim.max_steps)
    )
    step, epoch, micro = 0, 0, 0
    restored = checkpoint.restore_latest(ckpt_dir, model, opt, sched) if cfg.run.resume else None
    if restored is not None:
        state = restored[1]
        step, epoch, micro = state["step"], state["data"]["epoch"], state["data"]["micro"]
    elif cfg.run.init_from:
        init_from(model, cfg.run.init_from)
    if cfg.run.compile:
        model.student.compile()  # in place: parameter names (and checkpoints) unchanged
    net = model
    if d.world > 1:
        top = max(
            t.student_layer for t in model.heads.targets
        )  # blocks above the top target get no gradient
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=top < model.student.cfg.depth,
        )
    spec = loader_spec(
        cfg, model, infos, shards, d, online is not None, bank_targets=cfg.run.online_check_bank
    )
    pin = device.type == "cuda"
    log = RunLog(cfg.run_dir, d.main, cfg.log.tensorboard)
    conf = resolved(cfg)
    meta = {
        "student": model.student.cfg.to_json(),
        "targets": [dataclasses.asdict(t) for t in model.heads.targets],
        "params": count_parameters(model.student),
    }
    if d.main:
        log.write(
            "start", step, {"params": meta["params"], "world": d.world, "device": str(device)}
        )
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and cfg.optim.bf16
        else contextlib.nullcontext()
    )
    if not BankBatches(spec, 0).micro_batches():
        raise ConfigError(f"no training data: the shards {shards[:3]}... hold no segments")
    it = iter(
        make_loader(spec, epoch, micro, cfg.data.num_workers, cfg.data.prefetch, pin, epochs=None)
    )
    times: dict[str, list[float]] = {"step": [], "wait": [], "audio": []}
    done, losses = 0, []
    pending: list[
        torch.Tensor
    ] = []  # this interval's step losses, on the device until a log or checkpoint step
    parts: dict[str, list[torch.Tensor]] = {}
    t_last, wait, secs, n_steps = time.perf_counter(), 0.0, 0.0, 0
    while step < cfg.optim.max_steps and (stop_after is None or done < stop_after):
        batches, t_step, audio = [], time.perf_counter(), 0.0
        for _ in range(cfg.data.grad_accum):
            t0 = time.perf_counter()
            b = next(it)
            dt_wait = time.perf_counter() - t0
            wait += dt_wait
            times["wait"].append(dt_wait)
            epoch, micro = b["epoch"], b["index"] + 1
            audio += float(b["lengths"].sum()) / SAMPLE_RATE  # host tensor: no sync
            batches.append(to_device(b, device))
        total, gnorm, logs = update(net, model, batches, opt, cfg.optim.clip, d, amp, online)
        sched.step()
        pending.append(total)
        for k, v in logs.items():
            parts.setdefault(k, []).extend(v)
        step, done, n_steps, secs = step + 1, done + 1, n_steps + 1, secs + audio
        times["step"].append(time.perf_counter() - t_step)
        times["audio"].append(audio * d.world)
        last_step = step == cfg.optim.max_steps or (stop_after is not None and done == stop_after)
        ckpt_due = step % cfg.log.ckpt_every == 0 or last_step
        log_due = step % cfg.log.every == 0 or step == 1
        if log_due or ckpt_due or last_step:  # the only host syncs of the loop
            losses += read_losses(pending, step, d, device, ckpt_dir)
            pending = []
        if log_due:
            dt = time.perf_counter() - t_last
            audio_all = ddp.all_reduce_mean(secs, d, device) * d.world  # every rank takes part
            row = {
                "loss": losses[-1],
                "lr": sched.get_last_lr()[0],
                "grad_norm": float(gnorm),
                "steps_per_s": n_steps / dt,
                "audio_h_per_s": audio_all / 3600 / dt,
                "loader_wait_s": wait / n_steps,
                "epoch": epoch,
                **{k: float(torch.stack(v).mean()) for k, v in parts.items()},
            }
            log.write("train", step, row)
            if progress is not None and d.main:
                progress(step, cfg.optim.max_steps, row)
            t_last, wait, secs, n_steps, parts = time.perf_counter(), 0.0, 0.0, 0, {}
        if val_shards and step % cfg.log.val_every == 0:
            v = validate(model, cfg, infos, val_shards, d, device, amp, online)
            if d.main:
                log.write("val", step, v)
        if ckpt_due and d.main:
            check_finite_weights(model, step, ckpt_dir)
            checkpoint.save(
                ckpt_dir, step, model, opt, sched, {"epoch": epoch, "micro": micro}, conf, meta
            )
    if device.type == "cuda" and times["step"]:  # queued work belongs to the last step's time
        t0 = time.perf_counter()
        torch.cuda.synchronize(device)
        times["step"][-1] += time.perf_counter() - t0
    log.close()
    return {
        "step": step,
        "losses": losses,
        "run_dir": str(cfg.run_dir),
        "rank": d.rank,
        "step_seconds": times["step"],
        "wait_seconds": times["wait"],
        "audio_seconds": times["audio"],
    }


def update(
    net: nn.Module,
    model: Distiller,
    batches: list[dict],
    opt,
    clip: float,
    d: ddp.Dist,
    amp,
    online=None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[torch.Tensor]]]:
    """One optimizer update over the step's micro-batches (on the device), without a host sync:
    the summed loss and the gradient norm stay on the device. ``clip`` > 0 clips the norm to it.
    In online mode, batches that also hold the bank's targets (``run.online_check_bank``) log
    ``loss_bank``: the step's loss of the same outputs against them, summed as the loss is."""
    total, parts, bank_total = None, {}, None
    for a, b in enumerate(batches):
        bank = None
        if online is not None:
            if b["targets"]:  # the bank's, read for the check: fill() replaces them in place
                bank = {k: dict(b[k]) for k in ("targets", "target_lengths", "present")}
            online.fill(b)
        sync = net.no_sync() if d.world > 1 and a < len(batches) - 1 else contextlib.nullcontext()
        with sync, amp:
            loss, logs = net(b, b["global_items"] / d.world, bank)
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
        if bank is not None:
            other = logs.pop("loss_against")
            bank_total = other if bank_total is None else bank_total + other
        for k, v in logs.items():
            parts.setdefault(k, []).append(v)
    if bank_total is not None:
        parts["loss_bank"] = [bank_total]
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total, gnorm, parts


def read_losses(
    pending: list[torch.Tensor], step: int, d: ddp.Dist, device, ckpt_dir: Path
) -> list[float]:
    """The interval's step losses (mean over ranks) as floats - one sync; a non-finite one stops
    the run before anything is checkpointed after it."""
    vals = torch.stack(pending).double()
    if d.world > 1:
        vals = ddp.all_reduce_mean_tensor(vals)
    out = vals.tolist()
    for k, x in enumerate(out):
        if not math.isfinite(x):
            raise_diverged(f"the loss is {x} at step {step - len(out) + k + 1}", ckpt_dir)
    return out


def check_finite_weights(model: nn.Module, step: int, ckpt_dir: Path) -> None:
    """Refuse to checkpoint non-finite weights (one sync, at checkpoint steps only)."""
    ok = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(ok):
        raise_diverged(f"the weights are not finite after step {step}", ckpt_dir)


def raise_diverged(what: str, ckpt_dir: Path) -> None:
    last = checkpoint.latest(ckpt_dir)
    kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written"
    raise TrainingDiverged(
        f"training diverged: {what}; stopped ({kept}). Lower optim.lr or check optim.clip"
    )


@torch.no_grad()
def validate(
    model: Distiller, cfg: RunConfig, infos, shards: list[str], d: ddp.Dist, device, amp, online
) -> dict:
    spec = loader_spec(cfg, model, infos, shards, d, online is not None)
    spec = dataclasses.replace(spec, accum=1, augment=None, seed=cfg.run.seed + 1)
    model.eval()
    total, n, parts = 0.0, 0, {}
    for b in make_loader(spec, 0, 0, 0, 2, False):
        b = to_device(b, device)
        if online is not None:
            online.fill(b)
        with amp:
            loss, logs = model(b, 1.0)
        total, n = total + float(loss), n + len(b["domains"])
        for k, v in logs.items():  # unweighted per-target losses: comparable across weightings
            parts.setdefault(k, []).append(v)
    model.train()
    mean = ddp.all_reduce_mean(total, d, device) / max(1, ddp.all_reduce_mean(float(n), d, device))
    return {"loss": mean, **{k: float(torch.stack(v).mean()) for k, v in parts.items()}}
