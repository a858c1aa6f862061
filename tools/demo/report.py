"""The demo's report: Markdown with PNG plots, rendered from ``results.json`` alone.

Every number in it is measured by the demo run; the verdicts (who beats whom, which codec is
the default) are computed here from those numbers with the rules stated in the text.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAIN = "omega10-float32"
# A codec loses nothing measurable when its student's validation loss against the float32
# targets is within this fraction of the float32 student's, and its mean probe accuracy within
# this many points.
VAL_TOLERANCE = 0.03
PROBE_TOLERANCE = 0.02


def _acc(probe: dict, task: str) -> tuple[float, float, float] | None:
    r = probe.get("tasks", {}).get(task)
    if r is None:
        return None
    lo, hi = r["ci95"]
    return r["accuracy"], lo, hi


def _fmt(a) -> str:
    return "—" if a is None else f"{a[0]:.3f} [{a[1]:.2f}, {a[2]:.2f}]"


def tasks_of(results: dict) -> list[str]:
    return list(results["probes"][MAIN]["tasks"])


def mean_acc(probe: dict, tasks: list[str]) -> float:
    vals = [probe["tasks"][t]["accuracy"] for t in tasks if t in probe.get("tasks", {})]
    return sum(vals) / max(1, len(vals))


# -- plots ----------------------------------------------------------------------------------------


def plot_losses(results: dict, path: Path) -> None:
    rows = [r for r in results["runs"][MAIN]["log"] if r.get("kind") == "train"]
    keys = sorted({k for r in rows for k in r if k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k[5:])
    for name, run in results["runs"].items():
        if name.startswith("omega") and name != MAIN and name.endswith("float32"):
            tr = [r for r in run["log"] if r.get("kind") == "train"]
            ax.plot([r["step"] for r in tr], [r["loss"] for r in tr], "k--", lw=1, label=f"total, {name}")
    tr = [r for r in rows if "loss" in r]
    ax.plot([r["step"] for r in tr], [r["loss"] for r in tr], "k", lw=2, label="total (domain-weighted)")
    ax.set_xlabel("step")
    ax.set_ylabel("L1/D - log sigmoid(cos)")
    ax.set_title("Training loss per teacher / layer (omega = 10, float32 bank)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_probes(results: dict, path: Path) -> None:
    tasks = tasks_of(results)
    enc = [MAIN, "omega1-float32", "random"] + [k for k in results["probes"] if k.startswith("teacher:")]
    fig, ax = plt.subplots(figsize=(max(8, len(tasks) * 1.3), 4.5))
    width = 0.8 / len(enc)
    for i, name in enumerate(enc):
        xs, ys, errs = [], [], [[], []]
        for j, t in enumerate(tasks):
            a = _acc(results["probes"][name], t)
            if a is None:
                continue
            xs.append(j + i * width)
            ys.append(a[0])
            errs[0].append(a[0] - a[1])
            errs[1].append(a[2] - a[0])
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=name)
    for j, t in enumerate(tasks):
        chance = results["probes"][MAIN]["tasks"][t]["chance"]
        ax.plot([j - width / 2, j + 0.8 - width / 2], [chance, chance], "k:", lw=1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (95 % CI); dotted: majority class")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Linear probes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bank_bytes(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    f32 = results["banks"]["float32"]["teachers"]
    labels = [f"{t}/L{layer}" for t, d in f32.items() for layer in d["layers"]]
    codecs = list(results["banks"])
    width = 0.8 / len(codecs)
    for i, c in enumerate(codecs):
        teachers = results["banks"][c]["teachers"]
        vals = [teachers[t]["layers"][layer]["bytes"] / 2**20 for t, d in f32.items() for layer in d["layers"]]
        ax.bar([j + i * width for j in range(len(labels))], vals, width, label=c)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("MiB stored")
    ax.set_yscale("log")
    ax.set_title("Bank bytes by teacher / layer and codec")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(results: dict, path: Path) -> None:
    ext = results["extract"]
    names, vals = [], []
    for t, d in ext.get("teachers", {}).items():
        if d.get("forward_s"):
            names.append(f"extract: {t}")
            vals.append(d["seconds"] / d["forward_s"])
    for k in (MAIN, "pair-cached", "pair-online"):
        run = results["runs"].get(k)
        if run:
            names.append(f"train: {k}")
            vals.append(run["audio_s_per_s"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh(names, vals)
    ax.set_xlabel("audio seconds per second (CPU)")
    ax.set_title("Extraction (teacher forward) and training throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- text -----------------------------------------------------------------------------------------


def codec_table(results: dict, tasks: list[str]) -> tuple[list[str], str]:
    ref_val = results["float32_val"]["float32"]
    ref_acc = mean_acc(results["probes"][MAIN], tasks)
    lines = ["| codec | bits / value | bank MiB | val loss vs float32 targets | mean probe acc. | no measurable loss |",
             "|---|---|---|---|---|---|"]
    ok = []
    for codec, val in results["float32_val"].items():
        info = results["banks"][codec]
        stored = sum(d["bytes"] for t in info["teachers"].values() for d in t["layers"].values())
        values = sum(d["frames"] * t["dim"] for t in info["teachers"].values() for d in t["layers"].values())
        bits = 8 * stored / max(1, values)
        acc = mean_acc(results["probes"][f"omega10-{codec}"], tasks)
        fine = val <= ref_val * (1 + VAL_TOLERANCE) and acc >= ref_acc - PROBE_TOLERANCE
        if fine:
            ok.append((bits, codec))
        lines.append(f"| {codec} | {bits:.2f} | {info['bytes'] / 2**20:.1f} | {val:.4f} ({val / ref_val - 1:+.1%}) | "
                     f"{acc:.3f} ({acc - ref_acc:+.3f}) | {'yes' if fine else 'no'} |")
    best = min(ok)[1] if ok else "float32"
    return lines, best


def write_report(out: Path, results: dict) -> Path:
    out = Path(out)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    plot_losses(results, figs / "loss_curves.png")
    plot_probes(results, figs / "probes.png")
    plot_bank_bytes(results, figs / "bank_bytes.png")
    plot_throughput(results, figs / "throughput.png")
    tasks = tasks_of(results)
    probes = results["probes"]
    cfg = results["config"]
    md = ["# audistill demo report", ""]
    c = results["corpus"]
    md += [f"Corpus: {c['clips']} clips, {c['seconds'] / 60:.1f} min of speech, music and sound, built offline "
           f"({len(c['tasks'])} probe tasks). Student: `{cfg['student']}`, {cfg['steps']} steps of "
           f"{cfg['batch_seconds']:g} s of audio from each bank, seed {cfg['seed']}. "
           f"Whole run: {results['total_s'] / 60:.1f} min on this machine.", ""]
    for n in results.get("notes", []):
        md.append(f"> note: {n}")
    md += ["", "## 1. Distilled student against a randomly initialized one", "",
           "| task | chance | distilled (omega=10) | random init | beats random |", "|---|---|---|---|---|"]
    wins = sig = 0
    for t in tasks:
        a, r = _acc(probes[MAIN], t), _acc(probes["random"], t)
        win, clear = a[0] > r[0], a[1] > r[2]
        wins, sig = wins + win, sig + clear
        verdict = ("yes, intervals apart" if clear else "yes") if win else "**no**"
        md.append(f"| {t} | {probes[MAIN]['tasks'][t]['chance']:.3f} | {_fmt(a)} | {_fmt(r)} | {verdict} |")
    md += ["", f"The distilled student beats the random one on **{wins} of {len(tasks)}** tasks by point estimate, "
               f"{sig} of them with non-overlapping 95 % intervals. The test splits are small (tens of clips), so "
               "most differences here are within noise; this is a 2-core CPU demo, not a benchmark."]
    teachers = [k for k in probes if k.startswith("teacher:")]
    blind = [t for t in tasks if teachers and all(
        _acc(probes[k], t) is None or _acc(probes[k], t)[0] <= _acc(probes["random"], t)[0] for k in teachers)]
    if blind:
        md += ["", "No teacher beats the random student on: " + ", ".join(blind) + ". Distillation passes on what "
               "the teachers encode; a task the teachers are blind to (e.g. timbre for pitch trackers) is not "
               "one the distilled student can be expected to win."]
    md += ["",
           "![probes](figures/probes.png)", "", "## 2. Domain-aware weighting (omega = 10) against plain multi-teacher (omega = 1)", "",
           "| task | omega = 10 | omega = 1 |", "|---|---|---|"]
    for t in tasks:
        md.append(f"| {t} | {_fmt(_acc(probes[MAIN], t))} | {_fmt(_acc(probes['omega1-float32'], t))} |")
    v10, v1 = results["runs"][MAIN]["val"], results["runs"]["omega1-float32"]["val"]
    md += ["", f"Mean probe accuracy: omega = 10 {mean_acc(probes[MAIN], tasks):.3f}, omega = 1 "
               f"{mean_acc(probes['omega1-float32'], tasks):.3f}. Final validation loss (each with its own "
               f"weighting): {v10[-1]['loss'] if v10 else float('nan'):.4f} vs {v1[-1]['loss'] if v1 else float('nan'):.4f}. "
               "At this scale the difference is within the probes' confidence intervals unless stated by them.", ""]
    lines, best = codec_table(results, tasks)
    md += ["## 3. Target precision: the same student from float32, int8, 4-bit and VQ banks", ""] + lines
    md += ["", f"Rule: no measurable loss = validation loss against the float32 targets within "
               f"{VAL_TOLERANCE:.0%} of the float32 student's and mean probe accuracy within {PROBE_TOLERANCE} of it. "
               f"Fewest bits with no measurable loss here: **{best}**.", "", "![bytes](figures/bank_bytes.png)", ""]
    pc, po = results["runs"]["pair-cached"]["losses"], results["runs"]["pair-online"]["losses"]
    diff = max(abs(a - b) for a, b in zip(pc, po, strict=False)) if pc and po else float("nan")
    md += ["## 4. Cached against online teachers", "",
           f"The same student, seed and crops, {len(pc)} steps: from the float32 bank final loss {pc[-1]:.4f}, "
           f"with the teachers run online {po[-1]:.4f}; largest per-step difference {diff:.2e}. "
           f"Speed: {results['runs']['pair-cached']['steps_per_s']:.2f} steps/s from the bank vs "
           f"{results['runs']['pair-online']['steps_per_s']:.2f} steps/s online "
           f"({results['runs']['pair-cached']['steps_per_s'] / max(results['runs']['pair-online']['steps_per_s'], 1e-9):.1f}x).", "",
           "## 5. Teachers (reference, probed from the bank)", "", "| task | " + " | ".join(
               k[8:] for k in probes if k.startswith("teacher:")) + " |",
           "|---|" + "---|" * sum(1 for k in probes if k.startswith("teacher:"))]
    for t in tasks:
        md.append(f"| {t} | " + " | ".join(_fmt(_acc(probes[k], t)) for k in probes if k.startswith("teacher:")) + " |")
    md += ["", "A dash: the teacher was not run on that domain (domain-aware skipping at extraction).", "",
           "## 6. Curves and throughput", "", "![loss](figures/loss_curves.png)", "", "![throughput](figures/throughput.png)", "",
           "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in results["stages_s"].items()]
    ext = results["extract"]
    md += ["", f"Extraction: {ext.get('segments_written', 0)} segments, {ext.get('seconds', 0) / 60:.1f} min of audio in "
               f"{ext.get('wall_s', 0):.0f} s. Training from the bank: {results['runs'][MAIN]['steps_per_s']:.2f} steps/s, "
               f"{results['runs'][MAIN]['audio_s_per_s']:.1f} audio-s/s, data-loader wait "
               f"{results['runs'][MAIN]['loader_wait_frac']:.0%} of step time.", ""]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
