"""Table 2 as Markdown (the paper's layout) and the ROC curves of the three input modes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..metrics.classification import roc_curve

MODE_HEADINGS = {"patch": "Center", "centre": "Center", "random": "Random"}
MODE_NAMES = {"patch": "full patch", "centre": "centred crop", "random": "random crop"}


def _cell(value: float | dict | None) -> str:
    """A float, or ``mean ± sd`` for a cross-validation summary; undefined → n/a."""
    if isinstance(value, dict):
        mean, sd = value.get("mean"), value.get("sd")
        if mean is None or not math.isfinite(mean):
            return "n/a"
        return f"{mean:.4f} ± {sd:.4f}" if sd is not None and math.isfinite(sd) else f"{mean:.4f}"
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}"


def markdown_table(rows: dict[str, dict], info: dict, title: str = "") -> str:
    """``rows``: row label → {mode: {metric: float or {"mean", "sd"}}}; ``info``: crop, patch."""
    patch = "x".join(map(str, info["patch"]))
    crop = "x".join(map(str, info["crop"]))
    sizes = {"patch": patch, "centre": crop, "random": crop}
    modes = ("patch", "centre", "random")

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    def table(metrics: tuple[str, str], names: tuple[str, str]) -> list[str]:
        lines = [line(["Central point location"] + [c for m in modes for c in (MODE_HEADINGS[m], "")]),
                 line(["---"] * (1 + 2 * len(modes))),
                 line(["Patch size"] + [c for m in modes for c in (f"({sizes[m]})", "")]),
                 line(["Metric"] + [n for _ in modes for n in names])]
        for label, row in rows.items():
            lines.append(line([label] + [_cell(row[m][metric]) for m in modes for metric in metrics]))
        return lines

    out = [f"## {title}" if title else "## Accuracy and AUC (paper, Table 2)", "",
           "Table 2 layout: AUC and accuracy at threshold 0.5.", ""]
    out += table(("auc", "accuracy"), ("AUC", "Accuracy"))
    out += ["", "Sensitivity and specificity at threshold 0.5:", ""]
    out += table(("sensitivity", "specificity"), ("Sensitivity", "Specificity"))
    return "\n".join(out) + "\n"


def plot_roc(path: Path, labels: np.ndarray, scores: dict[str, np.ndarray], info: dict, title: str) -> None:
    """One ROC curve per input mode, AUC in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    for mode, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        size = info["patch"] if mode == "patch" else info["crop"]
        auc = info["modes"][mode]["auc"]
        label = f"{MODE_NAMES[mode]} {'x'.join(map(str, size))}: AUC " + ("n/a" if auc is None or
                                                                            not math.isfinite(auc) else f"{auc:.3f}")
        ax.plot(fpr, tpr, drawstyle="default", label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
