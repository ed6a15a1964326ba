"""PNG figures of the holdout evaluation, drawn from the evaluation's files.

matplotlib Agg, the Okabe-Ito colour-blind-safe palette and the cividis colour map:
``kd_ablation.png`` (validation pAUC per KD grid point), ``confidence.png`` (holdout P(melanoma)
per class with the decision thresholds), ``holdout_curves.png`` (ROC, precision-recall and
reliability of the key models) and ``hard_cases/<kind>.png`` (image grids). Every input is an
:class:`melanoma_kd.results.EvaluationRecord`; nothing here imports torch or the scoring code.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from melanoma_kd import metrics as M
from melanoma_kd.catalog import ROLE_LABELS, ROLES
from melanoma_kd.io import atomic_path
from melanoma_kd.plots import (
    LABEL_NAMES,
    ImageLoader,
    platt_of,
    pr_points,
    reliability_points,
    roc_points,
)
from melanoma_kd.results import DECISION_THRESHOLD, HARD_CASE_KINDS, EvaluationRecord

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
OKABE_ITO = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
ROLE_STYLE = {
    "best_teacher": {"color": OKABE_ITO["blue"], "linestyle": "-"},
    "scratch_student": {"color": OKABE_ITO["orange"], "linestyle": "--"},
    "kd_student": {"color": OKABE_ITO["green"], "linestyle": "-"},
    "kd_student_int8": {"color": OKABE_ITO["purple"], "linestyle": ":"},
}
CLASS_COLOR = {0: OKABE_ITO["blue"], 1: OKABE_ITO["vermillion"]}
HARD_CASE_TITLES = {
    "teacher_right_student_wrong": "Teacher right, KD student wrong",
    "student_right_teacher_wrong": "KD student right, teacher wrong",
    "high_confidence_errors": "KD student's most confident errors",
}
PAUC_LABEL = f"TPR ≥ {M.PAUC_MIN_TPR:g}; max {1 - M.PAUC_MIN_TPR:g}"

plt.rcParams.update(
    {
        "font.size": 11,
        "axes.titlesize": 12,
        "axes.labelsize": 11,
        "legend.fontsize": 9,
        "figure.dpi": 100,
        "svg.hashsalt": "melanoma-kd",
    }
)


# --------------------------------------------------------------------------- PNG figures


def save_png(fig: Figure, path: str | Path) -> None:
    """Save ``fig`` atomically as a PNG without volatile metadata, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def _num(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("inf")


def kd_ablation_figure(ev: EvaluationRecord) -> Figure:
    """Heatmap per KD method — T × α for response KD, one row of α for feature KD (it has no
    temperature) — coloured by validation pAUC; scratch baseline annotated."""
    ab = ev.ablation
    scratch = ev.metrics[ev.roles["scratch_student"]]["val_pauc"]
    methods = list(dict.fromkeys(ab["method"]))
    temps_of = {
        m: sorted(dict.fromkeys(ab.loc[ab["method"] == m, "temperature"]), key=_num)
        for m in methods
    }
    alphas = sorted(dict.fromkeys(ab["alpha"]), key=_num)
    vmin, vmax = float(ab["val_pauc"].min()), float(ab["val_pauc"].max())
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.005, vmax + 0.005
    cell_w = 1.3
    fig_w = max(6.0, 1.6 + len(methods) * (len(alphas) * cell_w + 0.8) + 1.2)
    fig_h = 2.3 + max(len(t) for t in temps_of.values()) * 0.9
    fig, axes = plt.subplots(
        1, len(methods), figsize=(fig_w, fig_h), squeeze=False, layout="constrained"
    )
    cmap = plt.get_cmap("cividis")
    image = None
    for ax, method in zip(axes[0], methods, strict=True):
        temps = temps_of[method]
        grid = np.full((len(temps), len(alphas)), np.nan)
        sel_mask = np.zeros(grid.shape, dtype=bool)
        for _, r in ab[ab["method"] == method].iterrows():
            i, j = temps.index(r["temperature"]), alphas.index(r["alpha"])
            grid[i, j], sel_mask[i, j] = r["val_pauc"], bool(r["selected"])
        image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i, j in itertools.product(range(len(temps)), range(len(alphas))):
            v = grid[i, j]
            if np.isnan(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=10)
                continue
            shade = (v - vmin) / (vmax - vmin)
            color = "black" if shade > 0.55 else "white"
            chosen = bool(sel_mask[i, j])
            text = f"{v:.4f}\n({v - scratch:+.4f})" + ("\nSELECTED" if chosen else "")
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=10,
                color=color,
                fontweight="bold" if chosen else "normal",
            )
            if chosen:
                ax.add_patch(
                    Rectangle(
                        (j - 0.47, i - 0.47),
                        0.94,
                        0.94,
                        fill=False,
                        lw=3.5,
                        edgecolor=OKABE_ITO["vermillion"],
                    )
                )
        ax.set_title(f"{method} KD")
        ax.set_xticks(range(len(alphas)), [f"α = {a}" for a in alphas])
        no_t = all(_num(t) == float("inf") for t in temps)
        ax.set_yticks(range(len(temps)), ["no T" if no_t else f"T = {t}" for t in temps])
        ax.set_xlabel("α (weight of the KD term)")
        ax.set_ylabel("" if no_t else "temperature T")
    assert image is not None
    cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9)
    cbar.set_label(f"validation pAUC ({PAUC_LABEL})")
    fig.suptitle(
        f"KD ablation on VALIDATION — cell: pAUC (Δ vs scratch student {scratch:.4f})\n"
        "selection made on validation; holdout never used",
        fontsize=11,
    )
    return fig


def _role_label(ev: EvaluationRecord, role: str) -> str:
    return f"{ROLE_LABELS[role]} ({ev.roles[role]})"


def confidence_figure(ev: EvaluationRecord) -> Figure:
    """Holdout P(melanoma) histograms per true class, one panel per key model."""
    roles = [r for r in ROLES if r in ev.roles]
    ncols = 2
    nrows = (len(roles) + 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(11, 3.6 * nrows), squeeze=False, layout="constrained"
    )
    bins = np.linspace(0.0, 1.0, 21)
    for ax, role in zip(axes.ravel(), roles, strict=False):
        name = ev.roles[role]
        y, s = ev.scores(name)
        m = ev.metrics[name]
        ax.hist(
            s[y == 0],
            bins=bins,
            density=True,
            color=CLASS_COLOR[0],
            alpha=0.55,
            label=f"benign (n={int((y == 0).sum())})",
        )
        ax.hist(
            s[y == 1],
            bins=bins,
            density=True,
            histtype="step",
            lw=2.2,
            color=CLASS_COLOR[1],
            label=f"melanoma (n={int((y == 1).sum())})",
        )
        ax.axvline(
            m[DECISION_THRESHOLD],
            color="black",
            ls="--",
            lw=1.3,
            label=f"decision threshold (val {ev.cfg.sens_target:.0%} sensitivity)",
        )
        ax.axvline(
            m["f1_threshold"], color="black", ls=":", lw=1.6, label="val-chosen max-F1 threshold"
        )
        ax.set_title(
            f"{_role_label(ev, role)}\nthresholds: {ev.cfg.sens_target:.0%}-sens "
            f"{m[DECISION_THRESHOLD]:.3f} (dashed), max-F1 {m['f1_threshold']:.3f} "
            "(dotted)",
            fontsize=10,
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("P(melanoma)")
        ax.set_ylabel("density (per class)")
    for ax in axes.ravel()[len(roles) :]:
        ax.set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4)
    fig.suptitle("Holdout confidence by true class (thresholds chosen on validation)")
    return fig


def holdout_curves_figure(ev: EvaluationRecord) -> Figure:
    """ROC, precision-recall and reliability curves of the key models on holdout."""
    fig, (roc_ax, pr_ax, rel_ax) = plt.subplots(1, 3, figsize=(16, 5.4), layout="constrained")
    prevalence = None
    for role in ROLES:
        if role not in ev.roles:
            continue
        name = ev.roles[role]
        y, s = ev.scores(name)
        m, style = ev.metrics[name], ROLE_STYLE[role]
        prevalence = float(y.mean())
        roc = roc_points(y, s)
        roc_ax.plot(
            roc["fpr"],
            roc["tpr"],
            lw=2,
            **style,
            label=f"{_role_label(ev, role)}  AUC {m['roc_auc']:.3f}",
        )
        # recall ascending drawn steps-pre: on (r[j-1], r[j]] the precision is p[j], the step
        # function whose area is average precision.
        pr = pr_points(y, s)
        pr_ax.plot(
            pr["recall"],
            pr["precision"],
            drawstyle="steps-pre",
            lw=2,
            **style,
            label=f"{ROLE_LABELS[role]}  AP {m['pr_auc']:.3f}",
        )
        raw = {"marker": "o", "ms": 4, "lw": 1.8, **style}
        after = {"marker": ".", "ms": 3, "lw": 1.2, **style, "linestyle": (0, (1, 1)), "alpha": 0.7}
        for probs, look, label in (
            (s, raw, f"{ROLE_LABELS[role]}  ECE {m['ece']:.3f}"),
            (platt_of(m).apply(s), after, f"  after Platt (val)  ECE {m['ece_calibrated']:.3f}"),
        ):
            rel = reliability_points(y, probs, ev.cfg.ece_bins)
            rel_ax.plot(rel["mean_p"], rel["frac_pos"], **look, label=label)
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    roc_ax.axhspan(
        M.PAUC_MIN_TPR,
        1.0,
        color="grey",
        alpha=0.12,
        label=f"pAUC region (TPR ≥ {M.PAUC_MIN_TPR:g})",
    )
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (sensitivity)",
        title="ROC (holdout)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    if prevalence is not None:
        pr_ax.axhline(prevalence, color="grey", lw=1, ls="--", label=f"prevalence {prevalence:.3f}")
    pr_ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision",
        title="Precision-recall (holdout)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    rel_ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    rel_ax.set(
        xlabel="mean predicted P(melanoma) in bin",
        ylabel="fraction melanoma in bin",
        title=f"Reliability ({ev.cfg.ece_bins} bins, holdout)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    roc_ax.legend(loc="lower right", fontsize=8)
    pr_ax.legend(loc="lower left", fontsize=8)
    rel_ax.legend(loc="upper left", fontsize=8)
    return fig


def hard_cases_figure(
    ev: EvaluationRecord, kind: str, load_image: ImageLoader, ncols: int = 6
) -> Figure:
    """Grid of the hardest holdout images of one kind, captioned with both models' scores."""
    cases = ev.hard_cases[ev.hard_cases["kind"] == kind]
    ea = ev.error_analysis
    subtitle = (
        f"teacher = {ea['teacher']} (t = {ea['teacher_threshold']:.3f}), "
        f"student = {ea['student']} (t = {ea['student_threshold']:.3f}); "
        f"decision thresholds: validation {ev.cfg.sens_target:.0%} sensitivity"
    )
    title = f"{HARD_CASE_TITLES[kind]} — holdout, hardest first"
    if cases.empty:
        fig = plt.figure(figsize=(9, 2.4))
        fig.text(0.5, 0.62, title, ha="center", fontsize=13)
        fig.text(0.5, 0.42, subtitle, ha="center", fontsize=9)
        fig.text(
            0.5, 0.18, "no such cases on the holdout set", ha="center", fontsize=12, style="italic"
        )
        return fig
    n = len(cases)
    cols = min(ncols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(2.1 * cols + 0.4, 2.75 * rows + 0.9),
        squeeze=False,
        layout="constrained",
    )
    for ax, (_, c) in zip(axes.ravel(), cases.iterrows(), strict=False):
        ax.imshow(load_image(str(c["image_id"])), interpolation="lanczos")
        truth = LABEL_NAMES[int(c["label"])]
        ax.set_title(
            f"{c['image_id']}\ntrue: {truth}", fontsize=9, color=CLASS_COLOR[int(c["label"])]
        )
        t_ok = (c["teacher_score"] >= ea["teacher_threshold"]) == bool(c["label"])
        s_ok = (c["student_score"] >= ea["student_threshold"]) == bool(c["label"])
        ax.set_xlabel(
            f"teacher P={c['teacher_score']:.3f} ({'right' if t_ok else 'WRONG'})\n"
            f"student P={c['student_score']:.3f} ({'right' if s_ok else 'WRONG'})",
            fontsize=9,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10)
    return fig


def render_pngs(ev: EvaluationRecord, plots_dir: str | Path, load_image: ImageLoader) -> list[Path]:
    """Write every PNG; return their paths."""
    root = Path(plots_dir)
    out = [root / "kd_ablation.png", root / "confidence.png", root / "holdout_curves.png"]
    save_png(kd_ablation_figure(ev), out[0])
    save_png(confidence_figure(ev), out[1])
    save_png(holdout_curves_figure(ev), out[2])
    with atomic_path(root / "hard_cases", directory=True) as tmp:
        for kind in HARD_CASE_KINDS:
            fig = hard_cases_figure(ev, kind, load_image)
            fig.savefig(tmp / f"{kind}.png", format="png", dpi=100, metadata={"Software": None})
            plt.close(fig)
    out += [root / "hard_cases" / f"{kind}.png" for kind in HARD_CASE_KINDS]
    return out
