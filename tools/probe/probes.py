"""Frozen encoder -> linear probes (HEAR / SUPERB style) on a labeled manifest.

``probe_manifest(encoder, manifest)`` extracts every clip's per-layer features once (kept in
memory), then for each task deals the clips (stratified, by seed, a recording's variants and a
clip's frames together) into k folds; each fold is predicted by a linear classifier - on one
layer or on a learned softmax-weighted sum of all layers - trained on k-2 folds and selected on
the remaining one. It reports the accuracy over every labelled item with a 95 % confidence
interval, the chance level, and each item's hits (for paired comparisons, ``tools/probe/stats.py``).

Manifest format: see ``audistill.tools.demo.corpus`` (``labels`` for utterance tasks,
``frame_labels`` for frame tasks; a ``tasks.json`` beside the manifest names the tasks, else they
are inferred: a frame task over key ``k`` is named ``frame_k``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol, runtime_checkable

import numpy as np
import torch
import typer

from audistill.shards.segments import SAMPLE_RATE
from audistill.tools.probe import linear as lin


@runtime_checkable
class Encoder(Protocol):
    """What a probe needs from a model: per-layer frame features of a 16 kHz mono waveform."""

    num_layers: int
    frame_rate: float

    def layers(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """(N,) float 16 kHz -> ``num_layers`` tensors (T, D)."""
        ...


class ProbeError(ValueError):
    """Bad manifest, unknown task or layer, or an encoder that cannot be loaded."""


@dataclass(frozen=True)
class ProbeTask:
    name: str
    level: str  # "utterance" | "frame"
    key: str  # key in the record's labels / frame_labels


# ---------------------------------------------------------------------------------------------
# Manifest and tasks


def read_manifest(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest {p} not found")
    records = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rec["id"], rec["path"]  # noqa: B018 - required keys
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ProbeError(f"{p}:{n}: not a manifest record ({e})") from None
        rec.setdefault("labels", {})
        rec.setdefault("frame_labels", {})
        records.append(rec)
    return records


def manifest_tasks(
    records: list[dict], tasks_file: str | Path | None = None
) -> dict[str, ProbeTask]:
    """Tasks from ``tasks.json`` when given and present, else every label key in the records."""
    if tasks_file is not None and Path(tasks_file).is_file():
        doc = json.loads(Path(tasks_file).read_text())
        return {t["name"]: ProbeTask(t["name"], t["level"], t["key"]) for t in doc["tasks"]}
    out: dict[str, ProbeTask] = {}
    for r in records:
        for k in r["labels"]:
            out.setdefault(k, ProbeTask(k, "utterance", k))
        for k in r["frame_labels"]:
            out.setdefault(f"frame_{k}", ProbeTask(f"frame_{k}", "frame", k))
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# Features


def load_wave(path: str | Path) -> torch.Tensor:
    """(N,) float32 16 kHz mono (decoded with soundfile; resampled if needed)."""
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    w = torch.from_numpy(x.mean(axis=1))
    if sr != SAMPLE_RATE:
        import torchaudio

        w = torchaudio.functional.resample(w, sr, SAMPLE_RATE)
    return w


class FeatureCache:
    """Per-clip features of one encoder, computed once: the time-mean of every layer (L, D) for
    every clip, and the full frames (L, T, D) (float16) for clips that frame tasks need."""

    def __init__(self, encoder: Encoder, root: str | Path):
        self.encoder = encoder
        self.root = Path(root)
        self.pooled: dict[str, torch.Tensor] = {}
        self.frames: dict[str, torch.Tensor] = {}

    def _compute(self, rec: dict) -> torch.Tensor:
        with torch.inference_mode():
            hs = self.encoder.layers(load_wave(self.root / rec["path"]))
        if len(hs) != self.encoder.num_layers:
            raise ProbeError(
                f"encoder returned {len(hs)} layers, says num_layers={self.encoder.num_layers}"
            )
        if len({h.shape[-1] for h in hs}) != 1:
            raise ProbeError(
                f"encoder layers differ in width {[h.shape[-1] for h in hs]}; probes need one width"
            )
        t = min(h.shape[0] for h in hs)
        if t == 0:
            raise ProbeError(f"encoder returned no frames for clip {rec['id']!r}")
        return torch.stack([h[:t].float().cpu() for h in hs])  # (L, T, D)

    def fill(
        self,
        records: list[dict],
        frame_ids: set[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        todo = [
            r
            for r in records
            if r["id"] not in self.pooled or (r["id"] in frame_ids and r["id"] not in self.frames)
        ]
        for i, rec in enumerate(todo):
            if progress:
                progress(i, len(todo))
            h = self._compute(rec)
            self.pooled[rec["id"]] = h.mean(1)
            if rec["id"] in frame_ids:
                self.frames[rec["id"]] = h.half()


def _select(x: torch.Tensor, layer: str | int, num_layers: int) -> torch.Tensor:
    """(N, L, D) -> (N, L', D): all layers for "weighted", else the one layer (L' = 1)."""
    if layer == "weighted":
        return x
    if isinstance(layer, int) and -num_layers <= layer < num_layers:
        i = layer % num_layers
        return x[:, i : i + 1]
    raise ProbeError(
        f"layer must be 'weighted' or an index in [{-num_layers}, {num_layers}), got {layer!r}"
    )


# ---------------------------------------------------------------------------------------------
# Probes


FOLDS = 5


def probe_utterance(
    x: torch.Tensor,
    labels: list[str],
    *,
    groups: list[str] | None = None,
    ids: list[str] | None = None,
    seed: int = 0,
    folds: int = FOLDS,
    **fit,
) -> dict:
    """Utterance-level probe on pooled features x (N, L, D) with one label per item, k-fold
    cross-validated: every kept item is predicted once, by a probe that never saw it (nor any
    item of its group: variants of one recording share a fold). Each fold's probe is trained on
    k-2 folds and selected on the next fold. Returns the accuracy over all items, its interval,
    the chance level and the per-item hits (``items``) for paired comparisons."""
    y_all = np.asarray(labels)
    n = len(y_all)
    groups_arr = (
        np.asarray(groups) if groups is not None else np.asarray([str(i) for i in range(n)])
    )
    fold = lin.grouped_folds(n, folds, seed, labels=y_all, groups=groups_arr)
    kept = np.flatnonzero(fold >= 0)
    classes = sorted(set(y_all[kept]))
    if len(classes) < 2:
        raise ProbeError("need 2+ labels with 3+ clips each")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index.get(v, -1) for v in y_all])
    hits, base, infos = np.zeros(n), np.zeros(n), []
    for f in range(folds):
        tr, va, te = lin.fold_parts(fold, f, folds)
        if len(te) == 0:
            continue
        if len(tr) == 0 or len(va) == 0:
            raise ProbeError(
                f"fold {f} has no training or validation items ({len(kept)} items, {folds} folds)"
            )
        probe, info = lin.fit_probe(x[tr], y[tr], x[va], y[va], len(classes), **fit)
        hits[te] = (probe.predict(x[te]) == y[te]).numpy()
        base[te] = (y[te] == int(torch.bincount(y[tr], minlength=len(classes)).argmax())).numpy()
        infos.append(info | {"layer_weights": probe.layer_weights()})
    correct, total = int(hits[kept].sum()), len(kept)
    if len(set(groups_arr[kept])) < total:  # variants of one recording are not independent items
        lo, hi = lin.cluster_bootstrap_interval(
            *_by_cluster(hits[kept], np.ones(total), groups_arr[kept]), seed
        )
        method = "group bootstrap"
    else:
        (lo, hi), method = lin.wilson_interval(correct, total), "wilson"
    item_ids = [str(i) for i in range(n)] if ids is None else list(ids)
    return {
        "level": "utterance",
        "accuracy": correct / total,
        "ci95": [lo, hi],
        "ci_method": method,
        "chance": float(base[kept].mean()),
        "n_classes": len(classes),
        "folds": folds,
        "n_items": total,
        "n_test": total,
        "dropped_labels": sorted(set(y_all) - set(classes)),
        **_fold_summary(infos),
        "items": {
            "ids": [item_ids[i] for i in kept],
            "correct": hits[kept].tolist(),
            "total": [1.0] * total,
            "clusters": [str(g) for g in groups_arr[kept]],
        },
    }


def _by_cluster(
    correct: np.ndarray, total: np.ndarray, clusters: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of correct and total."""
    _, inv = np.unique(clusters, return_inverse=True)
    return np.bincount(inv, correct), np.bincount(inv, total)


def _fold_summary(infos: list[dict]) -> dict:
    """What the folds' probes chose: weight decays, validation accuracy, mean layer weights."""
    return {
        "weight_decay": [i["weight_decay"] for i in infos],
        "val_accuracy": float(np.mean([i["val_accuracy"] for i in infos])),
        "layer_weights": np.mean([i["layer_weights"] for i in infos], 0).tolist(),
    }


MAX_TRAIN_FRAMES = 2000  # neighbouring frames are nearly copies: a seeded subset trains as well
MAX_VAL_FRAMES = 1000


def _subset(
    x: torch.Tensor, y: torch.Tensor, cap: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(y) <= cap:
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(y), size=cap, replace=False))
    return x[keep], y[keep]


def probe_frames(
    feats: list[torch.Tensor],
    targets: list[np.ndarray],
    n_classes: int,
    *,
    seed: int = 0,
    ids: list[str] | None = None,
    groups: list[str] | None = None,
    folds: int = FOLDS,
    **fit,
) -> dict:
    """Frame-level probe, k-fold cross-validated over clips (a clip's frames, and clips of one
    group, share a fold, so no frame is scored by a probe that trained on its neighbours); frames
    labelled -1 are not used; the interval is a bootstrap over clips. Training and validation use
    at most MAX_TRAIN_FRAMES / MAX_VAL_FRAMES frames per fold (seeded subset); every labelled frame
    of every clip is scored once.

    feats: per clip (L, T, D); targets: per clip (T,) class index or -1.
    """
    n = len(feats)
    folds = min(folds, n)
    if folds < 3:
        raise ProbeError(f"need 3+ clips for a frame probe, have {n}")
    clip_ids = [str(i) for i in range(n)] if ids is None else list(ids)
    groups_arr = np.asarray(clip_ids if groups is None else list(groups))
    fold = lin.grouped_folds(n, folds, seed, groups=groups_arr)
    keep = [torch.from_numpy(t >= 0) for t in targets]
    sizes = np.asarray([int(k.sum()) for k in keep], dtype=np.float64)

    def stack(clips: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [feats[i].transpose(0, 1)[keep[i]] for i in clips]  # (T', L, D) each
        ys = [torch.from_numpy(targets[i])[keep[i]] for i in clips]
        return torch.cat(xs), torch.cat(ys)

    correct, base, infos, n_train_frames = np.zeros(n), np.zeros(n), [], []
    for f in range(folds):
        tr, va, te = lin.fold_parts(fold, f, folds)
        if len(te) == 0:
            continue
        (xtr, ytr), (xva, yva) = stack(tr), stack(va)
        if len(ytr) == 0 or len(yva) == 0:
            raise ProbeError(f"fold {f}: no labelled frames to train or validate on")
        n_train_frames.append(len(ytr))
        xtr, ytr = _subset(xtr, ytr, MAX_TRAIN_FRAMES, seed + f)
        xva, yva = _subset(xva, yva, MAX_VAL_FRAMES, seed + folds + f)
        probe, info = lin.fit_probe(xtr, ytr, xva, yva, n_classes, **fit)
        majority = int(torch.bincount(ytr, minlength=n_classes).argmax())
        for i in te:
            x, y = stack(np.asarray([i]))
            correct[i] = float((probe.predict(x) == y).sum()) if len(y) else 0.0
            base[i] = float((y == majority).sum())
        infos.append(info | {"layer_weights": probe.layer_weights()})
    if sizes.sum() == 0:
        raise ProbeError("no labelled frames")
    lo, hi = lin.cluster_bootstrap_interval(*_by_cluster(correct, sizes, groups_arr), seed)
    return {
        "level": "frame",
        "accuracy": float(correct.sum() / sizes.sum()),
        "ci95": [lo, hi],
        "ci_method": "clip bootstrap",
        "chance": float(base.sum() / sizes.sum()),
        "n_classes": n_classes,
        "folds": folds,
        "n_items": n,
        "n_test": n,
        "n_test_frames": int(sizes.sum()),
        "n_train_frames": int(np.mean(n_train_frames)),
        "n_train_frames_used": min(MAX_TRAIN_FRAMES, int(np.mean(n_train_frames))),
        **_fold_summary(infos),
        "items": {
            "ids": clip_ids,
            "correct": correct.tolist(),
            "total": sizes.tolist(),
            "clusters": [str(g) for g in groups_arr],
        },
    }


def probe_manifest(
    encoder: Encoder,
    manifest_path: str | Path,
    tasks: list[str] | None = None,
    layer: str | int = "weighted",
    seed: int = 0,
    *,
    folds: int = FOLDS,
    cache: FeatureCache | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Probe ``encoder`` on every task of the manifest (or those named), ``folds``-fold
    cross-validated; one result per task, with per-item hits for paired comparisons."""
    manifest_path = Path(manifest_path)
    records = read_manifest(manifest_path)
    known = manifest_tasks(records, manifest_path.parent / "tasks.json")
    names = list(known) if tasks is None else list(tasks)
    unknown = [t for t in names if t not in known]
    if unknown:
        raise ProbeError(f"unknown task(s) {unknown}; the manifest has {sorted(known)}")
    chosen = [known[n] for n in names]
    used = [r for r in records if any(_has(r, t) for t in chosen)]
    frame_ids = {r["id"] for r in used if any(t.level == "frame" and _has(r, t) for t in chosen)}
    cache = cache or FeatureCache(encoder, manifest_path.parent)
    cache.fill(used, frame_ids, (lambda i, n: progress("features", i, n)) if progress else None)
    results = {}
    for i, task in enumerate(chosen):
        if progress:
            progress(task.name, i, len(chosen))
        recs = [r for r in used if _has(r, task)]
        if task.level == "utterance":
            x = _select(
                torch.stack([cache.pooled[r["id"]] for r in recs]), layer, encoder.num_layers
            )
            results[task.name] = probe_utterance(
                x,
                [r["labels"][task.key] for r in recs],
                ids=[r["id"] for r in recs],
                groups=[r.get("group", r["id"]) for r in recs],
                seed=seed,
                folds=folds,
            )
        else:
            results[task.name] = _probe_frame_task(cache, recs, task, layer, encoder, seed, folds)
    return {
        "manifest": str(manifest_path),
        "layer": layer,
        "seed": seed,
        "folds": folds,
        "num_layers": encoder.num_layers,
        "frame_rate": encoder.frame_rate,
        "tasks": results,
    }


def _has(rec: dict, task: ProbeTask) -> bool:
    return task.key in (rec["labels"] if task.level == "utterance" else rec["frame_labels"])


def _probe_frame_task(
    cache: FeatureCache,
    recs: list[dict],
    task: ProbeTask,
    layer: str | int,
    encoder: Encoder,
    seed: int,
    folds: int,
) -> dict:
    classes = sorted({lab for r in recs for _, _, lab in r["frame_labels"][task.key]})
    index = {c: i for i, c in enumerate(classes)}
    feats, targets = [], []
    for r in recs:
        h = cache.frames[r["id"]]  # (L, T, D)
        feats.append(_select(h.transpose(0, 1), layer, encoder.num_layers).transpose(0, 1))
        targets.append(
            lin.frame_targets(r["frame_labels"][task.key], h.shape[1], encoder.frame_rate, index)
        )
    if len(recs) < 3:
        raise ProbeError(f"task {task.name!r}: need 3+ clips, have {len(recs)}")
    return probe_frames(
        feats,
        targets,
        len(classes),
        seed=seed,
        ids=[r["id"] for r in recs],
        groups=[r.get("group", r["id"]) for r in recs],
        folds=folds,
    )


# ---------------------------------------------------------------------------------------------
# CLI: each way of getting an encoder is one small function with its lazy import.


def _load_student(path: str, device: str) -> Encoder:
    try:
        from audistill.train.export import load_student
    except ImportError as e:
        raise ProbeError(f"--student needs audistill.train.export.load_student ({e})") from None
    return load_student(path, device=device)


def _load_random_student(size: str, seed: int, device: str) -> Encoder:
    try:
        from audistill.train.export import random_student
    except ImportError as e:
        raise ProbeError(
            f"--random-student needs audistill.train.export.random_student ({e})"
        ) from None
    return random_student(size, seed=seed, device=device)


def _load_teacher(spec: str, device: str) -> Encoder:
    """``--teacher SPEC.toml`` (one teacher) or ``SPEC.toml:NAME``: the kept layers it lists."""
    from audistill.extract.errors import ExtractError
    from audistill.extract.teachers import teacher_encoder

    try:
        return teacher_encoder(spec, device=device)
    except ExtractError as e:
        raise ProbeError(f"--teacher {spec}: {e}") from None


def _parse_layer(text: str) -> str | int:
    if text == "weighted":
        return text
    try:
        return int(text)
    except ValueError:
        raise ProbeError(f"--layer must be 'weighted' or an integer, got {text!r}") from None


def format_results(res: dict) -> str:
    lines = [
        f"{'task':<20} {'level':<9} {'acc':>6} {'95% CI':>15} {'chance':>7} {'items':>7} "
        f"{'folds':>5}"
    ]
    for name, r in res["tasks"].items():
        lines.append(
            f"{name:<20} {r['level']:<9} {r['accuracy']:6.3f} "
            f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] {r['chance']:7.3f} {r['n_items']:>7} "
            f"{r['folds']:>5}"
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("probe")
    def probe(
        manifest: Annotated[
            Path, typer.Argument(help="manifest.jsonl (tasks.json beside it names the tasks).")
        ],
        student: Annotated[
            str | None, typer.Option("--student", help="Exported student / checkpoint folder.")
        ] = None,
        teacher: Annotated[
            str | None,
            typer.Option(
                "--teacher",
                help="Teacher spec file (one teacher), or SPEC:NAME for one of several.",
            ),
        ] = None,
        random_student: Annotated[
            str | None, typer.Option("--random-student", help="Untrained student of this size.")
        ] = None,
        task: Annotated[
            list[str] | None,
            typer.Option("--task", help="Task to probe (repeatable); default all."),
        ] = None,
        layer: Annotated[
            str, typer.Option("--layer", help="'weighted' (softmax over layers) or a layer index.")
        ] = "weighted",
        seed: Annotated[int, typer.Option("--seed", help="Random seed (folds).")] = 0,
        folds: Annotated[
            int, typer.Option("--folds", help="Cross-validation folds (2+).", min=2)
        ] = FOLDS,
        device: Annotated[
            str, typer.Option("--device", help="torch device for the encoder.")
        ] = "cpu",
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    ) -> None:
        """Cross-validated linear probes of a frozen encoder on a labeled manifest: accuracy, 95 %
        CI, chance."""
        chosen = [
            (o, v)
            for o, v in (
                ("--student", student),
                ("--teacher", teacher),
                ("--random-student", random_student),
            )
            if v is not None
        ]
        try:
            if len(chosen) != 1:
                raise ProbeError("give exactly one of --student, --teacher, --random-student")
            opt, value = chosen[0]
            if opt == "--student":
                encoder = _load_student(value, device)
            elif opt == "--teacher":
                encoder = _load_teacher(value, device)
            else:
                encoder = _load_random_student(value, seed, device)

            def show(stage: str, i: int, n: int) -> None:
                if not as_json and (stage != "features" or i % 100 == 0):
                    typer.echo(f"  {stage} ({i}/{n})", err=True)

            res = probe_manifest(
                encoder,
                manifest,
                task or None,
                _parse_layer(layer),
                seed,
                folds=folds,
                progress=show,
            )
        except (ProbeError, FileNotFoundError) as e:
            typer.echo(f"audistill: error: {e}", err=True)
            raise typer.Exit(2) from None
        res["encoder"] = {"kind": chosen[0][0].lstrip("-"), "value": chosen[0][1]}
        typer.echo(json.dumps(res) if as_json else format_results(res))
