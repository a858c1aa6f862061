"""The demo's report: Markdown with PNG plots, rendered from ``results.json`` alone.

Every number in it is measured by the demo run; the verdicts (who beats whom, which codec is
the default) come from paired tests on the probes' per-item hits (``tools/demo/claims.py``), with
the rules stated in the text, and each claim is marked decided or open.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from audistill.tools.demo import claims
from audistill.tools.demo.claims import MAIN, MARGIN, OMEGA1, RANDOM
from audistill.tools.probe.linear import cluster_bootstrap_interval
from audistill.tools.probe.stats import Scores

# a codec's student's validation loss against the float32 targets is shown beside the decision;
# it has one value per run (no paired test), so it informs but does not decide


def runs_of(results: dict, name: str) -> list[dict]:
    """Training runs of one recipe, one per student seed."""
    r = results["runs"].get(name)
    return [] if r is None else (r if isinstance(r, list) else [r])


def first(results: dict, name: str) -> dict | None:
    runs = runs_of(results, name)
    return runs[0] if runs else None


def _acc(results: dict, recipe: str, task: str, seed: int = 0) -> tuple[float, float, float] | None:
    """Mean accuracy over seeds and a 95 % cluster-bootstrap interval of the seed-mean hits."""
    runs = claims.seed_runs(results, recipe)
    s = claims.recipe_scores(runs, task)
    if s is None:
        return None
    c, n = _cluster_sums(s)
    lo, hi = cluster_bootstrap_interval(c, n, seed)
    return s.accuracy, lo, hi


def _cluster_sums(s: Scores) -> tuple[np.ndarray, np.ndarray]:
    _, inv = np.unique(np.asarray(s.clusters), return_inverse=True)
    return np.bincount(inv, s.correct), np.bincount(inv, s.total)


def _fmt(a) -> str:
    return "—" if a is None else f"{a[0]:.3f} [{a[1]:.2f}, {a[2]:.2f}]"


def _diff(c: dict | None) -> str:
    if c is None:
        return "—"
    p = "< 0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}"
    return f"{c['diff']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], p {p}"


def _spread(results: dict, recipe: str, task: str) -> str:
    sp = claims.spread(claims.seed_runs(results, recipe), task)
    if sp is None or sp["n_seeds"] < 2:
        return ""
    return f" (seeds: {sp['mean']:.3f} ± {sp['std']:.3f}, {sp['min']:.3f}–{sp['max']:.3f})"


def tasks_of(results: dict) -> list[str]:
    return list(claims.seed_runs(results, MAIN)[0]["tasks"])


def mean_acc(results: dict, recipe: str, tasks: list[str]) -> float:
    vals = [a[0] for t in tasks if (a := _acc(results, recipe, t)) is not None]
    return sum(vals) / max(1, len(vals))


VERDICT_TEXT = {
    "A better": "**yes** (decided)",
    "B better": "**no**: worse (decided)",
    "equivalent": "no difference beyond ±0.02 (decided)",
    "no worse": "not worse by 0.02 (decided)",
    "open": "open",
}


# -- plots ----------------------------------------------------------------------------------------


def teacher_losses(rows: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per teacher, the unweighted loss of each logged step: the mean of its targets' losses
    (``loss/TEACHER__Lnn``). It does not depend on the domain weighting, so runs with different
    omegas are comparable on it (their weighted totals are not)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        per: dict[str, list[float]] = {}
        for k, v in r.items():
            if k.startswith("loss/") and "__L" in k:
                per.setdefault(k[5:].rsplit("__L", 1)[0], []).append(v)
        for t, vals in per.items():
            steps, values = out.setdefault(t, ([], []))
            steps.append(r["step"])
            values.append(sum(vals) / len(vals))
    return dict(sorted(out.items()))


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_losses(results: dict, path: Path) -> None:
    """Unweighted per-teacher loss, omega = 10 (solid) against omega = 1 (dashed), first seed of
    each: raw points faint, a moving average, validation points as markers."""
    teachers = sorted(
        {
            t
            for name in (MAIN, OMEGA1)
            if (r := first(results, name))
            for t in teacher_losses([x for x in r["log"] if x.get("kind", "train") == "train"])
        }
    )
    fig, axes = plt.subplots(
        1, max(1, len(teachers)), figsize=(4 * max(1, len(teachers)), 4), squeeze=False
    )
    for ax, teacher in zip(axes[0], teachers, strict=False):
        for name, style, colour, marker in ((MAIN, "-", "C0", "o"), (OMEGA1, "--", "C1", "s")):
            run = first(results, name)
            if run is None:
                continue
            steps, vals = teacher_losses(
                [x for x in run["log"] if x.get("kind", "train") == "train"]
            ).get(teacher, ([], []))
            if steps:
                ax.plot(
                    steps,
                    smooth(vals, max(1, len(vals) // 10)),
                    style,
                    color=colour,
                    label=f"{name} (smoothed)",
                )
                ax.plot(steps, vals, style, color=colour, alpha=0.25, lw=0.8)
            vsteps, vvals = teacher_losses(run.get("val", [])).get(teacher, ([], []))
            if vsteps:
                ax.plot(vsteps, vvals, marker, color=colour, mfc="none", label=f"{name} validation")
        ax.set_title(teacher, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("unweighted loss: L1/D - log sigmoid(cos)")
    fig.suptitle(
        "Per-teacher loss, the same (unweighted) quantity for both weightings", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_probes(results: dict, path: Path) -> None:
    tasks = tasks_of(results)
    enc = [MAIN, OMEGA1, RANDOM] + [k for k in results["probes"] if k.startswith("teacher:")]
    fig, ax = plt.subplots(figsize=(max(8, len(tasks) * 1.3), 4.5))
    width = 0.8 / len(enc)
    for i, name in enumerate(enc):
        xs, ys, errs = [], [], [[], []]
        for j, t in enumerate(tasks):
            a = _acc(results, name, t)
            if a is None:
                continue
            xs.append(j + i * width)
            ys.append(a[0])
            errs[0].append(max(0.0, a[0] - a[1]))
            errs[1].append(max(0.0, a[2] - a[0]))
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=name)
    for j, t in enumerate(tasks):
        chance = claims.seed_runs(results, MAIN)[0]["tasks"][t]["chance"]
        ax.plot([j - width / 2, j + 0.8 - width / 2], [chance, chance], "k:", lw=1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel("cross-validated accuracy (95 % CI); dotted: majority class")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("Linear probes (mean over student seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bank_bytes(results: dict, path: Path) -> None:
    """Per codec bank: audio, feature codes, codec state and the rest, stacked (MiB)."""
    codecs = list(results["banks"])
    parts = (
        ("audio", "audio_bytes"),
        ("features", "feature_bytes"),
        ("codec state", "codec_state_bytes"),
        ("other", "shard_other_bytes"),
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = [0.0] * len(codecs)
    for label, key in parts:
        vals = [results["banks"][c]["sizes"][key] / 2**20 for c in codecs]
        ax.bar(codecs, vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("MiB stored")
    ax.set_title("Bank bytes by kind and codec")
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
        run = first(results, k)
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


def bits_of(results: dict, codec: str) -> float:
    return results["banks"][codec]["sizes"]["bits_per_value"]


def variance_lost(results: dict, codec: str) -> tuple[float, float] | None:
    """Median and worst share of a teacher layer's variance the codec's bank lost against the
    float32 bank (``shards.fidelity``); None where the run did not measure it."""
    per_layer = results["banks"][codec].get("fidelity")
    if codec == "float32":
        return 0.0, 0.0
    if not per_layer:
        return None
    v = sorted(r["variance_lost"] for r in per_layer.values())
    return float(np.median(v)), v[-1]


def worst_lost(results: dict) -> dict[str, float | None]:
    return {
        c: (None if (v := variance_lost(results, c)) is None else v[1]) for c in results["banks"]
    }


def claims_summary(
    decisions: dict, best: str, why: str, lost: dict[str, float | None] | None = None
) -> list[str]:
    """The report's first section: each claim, decided or open, in one line."""
    vs = decisions["distilled_vs_random"]
    won = [t for t, c in vs["tasks"].items() if c["verdict"] == "A better"]
    om = decisions["omega10_vs_omega1"]["claim"]
    lines = [
        "## Claims and their status",
        "",
        "Decided by paired tests on the same clips (95 % cluster-bootstrap intervals of the "
        "accuracy difference; "
        f"'no measurable loss' = the interval's lower bound above −{MARGIN}). *Open* means this "
        "run's evidence "
        "does not decide it.",
        "",
        f"- Distilled beats random-init: decided on {len(won)} of {len(vs['tasks'])} tasks"
        + (f" ({', '.join(won)})" if won else "")
        + ".",
        f"- Distilled beats random-init on every task some teacher beats it on "
        f"({', '.join(vs['taught_tasks']) or 'none'}): **{vs['claim']['status']}**.",
        f"- omega = 10 against omega = 1 (mean over tasks): **{om['status']}**"
        + (
            f" — {om['verdict'].replace('A', 'omega = 10').replace('B', 'omega = 1')}"
            if om["status"] == "decided"
            else ""
        )
        + ".",
    ]
    for c, v in decisions["codecs"].items():
        state = {
            "yes": "decided: no measurable loss",
            "no": "decided: loses more than the margin",
            "open": "open",
        }[v["no_measurable_loss"]]
        worst = (lost or {}).get(c)
        lines.append(
            f"- `{c}` loses nothing measurable against float32: **{state}**"
            + (
                ""
                if worst is None
                else f" (its targets lose up to {worst:.2%} of a layer's variance)"
            )
            + "."
        )
    lines += [f"- Default codec from this run: **{best}** ({why})."]
    co = decisions.get("cached_vs_online")
    if co is not None:
        if co.get("same_weights"):
            lines.append(
                "- A student trained from the bank trains as one with the teachers online (the "
                "same weights' loss against the bank's targets and the online teachers' within "
                f"{co['tolerance']:.0e} at every step of {co['steps']}): "
                f"**{'yes' if co['within'] else 'no'}** (largest {co['max_abs']:.1e}; the two "
                f"runs' own losses drift apart by up to {co['max_drift']:.1e}, see section 4)."
            )
        else:
            lines.append(
                f"- A student trained from the bank trains as one with the teachers online "
                f"(|loss difference| ≤ {co['tolerance']:.0e} at every step of {co['steps']}): "
                f"**{'yes' if co['within'] else 'no'}** (largest {co['max_abs']:.1e}; step 1, "
                f"same weights, {abs(co['first_step']):.1e})."
            )
    return lines + [""]


def codec_table(results: dict, decisions: dict) -> tuple[list[str], str, str]:
    lines = [
        "| codec | bits / value (codes) | bits / value (with codec state) | audio MiB | features "
        "MiB | "
        "codec state MiB | variance lost, median / worst layer | val loss vs float32 targets | "
        "mean probe acc. − float32 [95 % CI] | "
        f"no measurable loss (lower bound > −{MARGIN}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref_val = _mean(results["float32_val"].get("float32"))
    for codec in results["banks"]:
        z = results["banks"][codec]["sizes"]
        val = _mean(results["float32_val"].get(codec))
        d = decisions["codecs"].get(codec)
        verdict = (
            "reference"
            if d is None
            else {"yes": "yes", "no": "no (loss shown)", "open": "open"}[d["no_measurable_loss"]]
        )
        lines.append(
            f"| {codec} | {z['bits_per_value_codes']:.2f} | {z['bits_per_value']:.2f} | "
            f"{z['audio_bytes'] / 2**20:.1f} | {z['feature_bytes'] / 2**20:.1f} | "
            f"{z['codec_state_bytes'] / 2**20:.2f} | {_lost(variance_lost(results, codec))} | "
            + (f"{val:.4f} ({val / ref_val - 1:+.1%})" if val is not None and ref_val else "—")
            + f" | {_diff(None if d is None else d['mean'])} | {verdict} |"
        )
    best, why = claims.default_codec(
        decisions, {c: bits_of(results, c) for c in results["banks"]}, worst_lost(results)
    )
    return lines, best, why


def _lost(v: tuple[float, float] | None) -> str:
    if v is None:
        return "—"
    return "0 (reference)" if v == (0.0, 0.0) else f"{v[0]:.2%} / {v[1]:.2%}"


def _mean(v) -> float | None:
    if v is None:
        return None
    v = v if isinstance(v, list) else [v]
    return sum(v) / len(v)


def write_report(out: Path, results: dict) -> Path:
    out = Path(out)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    plot_losses(results, figs / "loss_curves.png")
    plot_probes(results, figs / "probes.png")
    plot_bank_bytes(results, figs / "bank_bytes.png")
    plot_throughput(results, figs / "throughput.png")
    tasks = tasks_of(results)
    decisions = results.get("claims") or claims.decide(results, tasks, list(results["banks"]))
    cfg = results["config"]
    seeds = cfg.get("seeds", 1)
    md = ["# audistill demo report", ""]
    c = results["corpus"]
    profile = cfg.get("profile", "default")
    md += [
        f"Profile: **{profile}** (`audistill demo{'' if profile == 'default' else ' --' + profile}`"
        "). "
        f"Corpus: {c['clips']} clips, {c['seconds'] / 60:.1f} min of speech, music and sound, "
        "built offline "
        f"({len(c['tasks'])} probe tasks). Student: `{cfg['student']}`, {cfg['steps']} steps of "
        f"{cfg['batch_seconds']:g} s of audio from each bank, {seeds} student "
        f"seed{'s' * (seeds > 1)} "
        f"(from {cfg['seed']}). Probes: {cfg.get('probe_folds', 5)}-fold cross-validated over "
        "every labelled clip. "
        f"Whole run: {results['total_s'] / 60:.1f} min on this machine{_reused(results)}.",
        "",
    ]
    for n in results.get("notes", []):
        md.append(f"> note: {n}")
    lines, best, why = codec_table(results, decisions)
    md += [""] + claims_summary(decisions, best, why, worst_lost(results))
    md += _section_random(results, decisions, tasks)
    md += _section_omega(results, decisions, tasks)
    md += [
        "## 3. Target precision: the same student from float32, int8, 4-bit and VQ banks",
        "",
    ] + lines
    md += [
        "",
        "Bits per value count what decoding needs: the codes and the fitted codec state (VQ "
        "codebooks, "
        "int8-delta's statistics), over every stored teacher value. Rule: a codec loses nothing "
        "measurable when "
        "the 95 % interval of its student's mean probe accuracy minus the float32 student's, "
        "paired over the same "
        f"clips, has its lower bound above −{MARGIN}. Variance lost is measured on the stored "
        "targets themselves, per teacher layer against the float32 bank (squared error over the "
        "layer's variance, `audistill shards compare`): what a student is asked to learn that is "
        "the codec's and not the teacher's. The default codec is the fewest bits among the "
        "codecs with no measurable loss on the probes that lose at most "
        f"{claims.MAX_VARIANCE_LOST:.0%} of every layer's variance (probes of a small student "
        "trained briefly cannot see what a large one loses from coarsened targets). Default "
        f"codec: **{best}** ({why}).",
        "",
        _library_default_note(cfg, best),
        "",
        "![bytes](figures/bank_bytes.png)",
        "",
    ]
    md += _section_pair(results, decisions)
    md += _section_teachers(results, decisions, tasks)
    md += _section_curves(results)
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


def _section_random(results: dict, decisions: dict, tasks: list[str]) -> list[str]:
    vs = decisions["distilled_vs_random"]
    md = [
        "## 1. Distilled student against a randomly initialized one",
        "",
        "| task | clips | chance | distilled (omega=10) | random init | difference [95 % CI], p | "
        "beats random |",
        "|---|---|---|---|---|---|---|",
    ]
    chance = claims.seed_runs(results, MAIN)[0]["tasks"]
    for t in tasks:
        cmp = vs["tasks"].get(t)
        clips = (
            "—" if cmp is None else f"{cmp['n_clusters']}" + (" (few)" if cmp["few_clips"] else "")
        )
        md.append(
            f"| {t} | {clips} | {chance[t]['chance']:.3f} | "
            f"{_fmt(_acc(results, MAIN, t))}{_spread(results, MAIN, t)} | "
            f"{_fmt(_acc(results, RANDOM, t))} | {_diff(cmp)} | "
            f"{VERDICT_TEXT[cmp['verdict']] if cmp else '—'} |"
        )
    md += [
        "",
        "Each difference is paired: both students are probed on the same clips with the same "
        "folds, and "
        "clips are resampled together (a clip's frames as one unit). 'few' marks tasks with fewer "
        "than "
        f"{decisions['min_clusters']} independent clips: their intervals are rough, and they stay "
        "open.",
    ]
    if vs["taught_tasks"]:
        md += [
            "",
            "Tasks some teacher beats random-init on (paired, decided): "
            + ", ".join(vs["taught_tasks"])
            + f". The claim that distillation wins on all of them is **{vs['claim']['status']}**.",
        ]
    else:
        md += [
            "",
            "No teacher is shown to beat random-init on any task here, so whether the distilled "
            "student "
            "carries what the teachers know is **open** at this scale.",
        ]
    return md + ["", "![probes](figures/probes.png)", ""]


def _section_omega(results: dict, decisions: dict, tasks: list[str]) -> list[str]:
    om = decisions["omega10_vs_omega1"]
    md = [
        "## 2. Domain-aware weighting (omega = 10) against plain multi-teacher (omega = 1)",
        "",
        "| task | omega = 10 | omega = 1 | difference [95 % CI], p | verdict |",
        "|---|---|---|---|---|",
    ]
    for t in tasks:
        cmp = om["tasks"].get(t)
        md.append(
            f"| {t} | {_fmt(_acc(results, MAIN, t))}{_spread(results, MAIN, t)} | "
            f"{_fmt(_acc(results, OMEGA1, t))}{_spread(results, OMEGA1, t)} | "
            f"{_diff(cmp)} | {cmp['verdict'] if cmp else '—'} |"
        )
    if om["mean"]:
        md.append(
            f"| **mean over tasks** | {mean_acc(results, MAIN, tasks):.3f} | "
            f"{mean_acc(results, OMEGA1, tasks):.3f} | "
            f"{_diff(om['mean'])} | {om['mean']['verdict']} |"
        )
    md += [
        "",
        "Verdicts: 'A better' / 'B better' (omega = 10 / omega = 1 ahead, p < 0.05 and the "
        "interval clear of 0), "
        f"'equivalent' (interval inside ±{MARGIN}), 'no worse' (lower bound above −{MARGIN}), "
        "'open'.",
    ]
    v10, v1 = _final_val(first(results, MAIN)), _final_val(first(results, OMEGA1))
    if v10 is not None and v1 is not None:
        md += [
            "",
            "Final validation loss, unweighted mean over teachers (the same quantity for both "
            "weightings): "
            f"omega = 10 {v10:.4f}, omega = 1 {v1:.4f} (first seed; one number per run, no "
            "interval).",
        ]
    return md + [""]


def _library_default_note(cfg: dict, chosen: str) -> str:
    """What this run's codec choice (``chosen``) means for the library's default codec."""
    from audistill.extract.spec import DEFAULT_CODEC

    seeds = cfg.get("seeds", 1)
    if cfg.get("profile") == "full" and seeds >= 3:
        if chosen == DEFAULT_CODEC:
            return (
                f"This is the deciding profile ({seeds} student seeds): its choice is the "
                f"library's default codec (`{DEFAULT_CODEC}`)."
            )
        return (
            f"This is the deciding profile ({seeds} student seeds), and its choice (`{chosen}`) "
            f"is not the library's default codec (`{DEFAULT_CODEC}`): the default changes by a "
            "commit to `extract/spec.py` that weighs this result with what the probes do not "
            "measure (the validation loss against float32 targets above, the training length), "
            "never by a report alone."
        )
    return (
        f"The library's default codec (`{DEFAULT_CODEC}`) changes only on the decision of a "
        f"`--full` run (three student seeds); this run ({cfg.get('profile', 'default')} "
        f"profile, {seeds} seed{'s' * (seeds > 1)}) is advisory."
    )


def _final_val(run: dict | None) -> float | None:
    if not run or not run.get("val"):
        return None
    per = teacher_losses(run["val"][-1:])
    return sum(v[1][0] for v in per.values()) / len(per) if per else None


def _section_pair(results: dict, decisions: dict) -> list[str]:
    pc, po = first(results, "pair-cached"), first(results, "pair-online")
    lc, lo = pc["losses"], po["losses"]
    co = decisions.get("cached_vs_online") or claims.cached_vs_online(results)
    speed = (
        f"Speed: {pc['steps_per_s']:.2f} steps/s from the bank vs {po['steps_per_s']:.2f} steps/s "
        f"online ({pc['steps_per_s'] / max(po['steps_per_s'], 1e-9):.1f}x)."
    )
    head = ["## 4. Cached against online teachers", ""]
    if co and co.get("same_weights"):
        same = ", ".join(f"{d:+.1e}" for d in co["diffs"])
        drift = ", ".join(f"{d:+.1e}" for d in co["drift"])
        return head + [
            f"The same student, seed and crops, {len(lc)} steps. At every step of the online run "
            "the same student outputs are scored against the online teachers' targets and "
            "against the bank's: per step (bank − online) "
            f"{same}; largest {co['max_abs']:.2e} (tolerance {co['tolerance']:.0e}). That "
            "difference is the bank's alone. The two runs' own losses (from the float32 bank "
            f"final {lc[-1]:.4f}, online {lo[-1]:.4f}) per step (bank run − online run): "
            f"{drift}. They start from the same weights and drift apart as any two float32 runs "
            "whose targets differ in the last bits (the teachers run on other batches online "
            "than at extraction); Adam's first steps amplify that by the CPU's kernels, so the "
            "drift is shown and not decided on. " + speed,
            "",
        ]
    steps = ", ".join(f"{d:+.1e}" for d in co["diffs"]) if co else "—"
    diff = co["max_abs"] if co else float("nan")
    return head + [
        f"The same student, seed and crops, {len(lc)} steps: from the float32 bank final loss "
        f"{lc[-1]:.4f}, "
        f"with the teachers run online {lo[-1]:.4f}; largest per-step difference {diff:.2e}. "
        f"Per step (bank − online): {steps}. Step 1 starts from the same weights, so its "
        "difference is the targets' alone; later steps add the drift of two float32 "
        "trajectories apart. " + speed,
        "",
    ]


def _section_teachers(results: dict, decisions: dict, tasks: list[str]) -> list[str]:
    teachers = [k for k in results["probes"] if k.startswith("teacher:")]
    md = [
        "## 5. Teachers (reference, probed from the bank)",
        "",
        "| task | " + " | ".join(f"{k[8:]} | {k[8:]} − random" for k in teachers) + " |",
        "|---|" + "---|---|" * len(teachers),
    ]
    for t in tasks:
        cells = []
        for k in teachers:
            cmp = decisions["teacher_vs_random"][k]["tasks"].get(t)
            cells += [_fmt(_acc(results, k, t)), _diff(cmp)]
        md.append(f"| {t} | " + " | ".join(cells) + " |")
    return md + [
        "",
        "A dash: the teacher was not run on that domain (domain-aware skipping at extraction).",
        "",
    ]


def _reused(results: dict) -> str:
    """What of the run was taken from an earlier one into the same folder (not in its time)."""
    reused = results.get("reused_stages", [])
    if not reused:
        return ""
    return (
        f" (this invocation; {len(reused)} finished stage{'s' * (len(reused) > 1)} reused from "
        "earlier runs, their time not counted)"
    )


def _reused_list(results: dict) -> str:
    names = results["reused_stages"]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _section_curves(results: dict) -> list[str]:
    md = [
        "## 6. Curves and throughput",
        "",
        "![loss](figures/loss_curves.png)",
        "",
        "![throughput](figures/throughput.png)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    md += [f"| {k} | {v:.1f} |" for k, v in results["stages_s"].items()]
    if results.get("reused_stages"):
        md += ["", f"Stages reused from earlier runs are not timed here: {_reused_list(results)}."]
    ext, main = results["extract"], first(results, MAIN)
    md += [
        "",
        f"Extraction: {ext.get('segments_written', 0)} segments, {ext.get('seconds', 0) / 60:.1f} "
        "min of audio in "
        f"{ext.get('wall_s', 0):.0f} s. Training from the bank: {main['steps_per_s']:.2f} steps/s, "
        f"{main['audio_s_per_s']:.1f} audio-s/s, data-loader wait {main['loader_wait_frac']:.0%} "
        "of step time.",
        "",
    ]
    return md
