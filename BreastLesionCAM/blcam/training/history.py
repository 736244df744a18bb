"""Per-epoch training log: ``history.csv``, ``history.jsonl`` and ``curves.png`` (paper Fig. 2).

The whole log is rewritten atomically each epoch (it is tiny), from the copy kept in the
checkpoint, so after ``--resume`` the files hold exactly one row per finished epoch even
if the run was killed between writing the log and writing the checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..io.atomic import atomic_path, json_safe, write_csv_atomic, write_text_atomic

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr", "epoch_s",
           "samples_per_s"]


def write_history(out_dir: Path, rows: list[dict]) -> None:
    """``history.csv`` and ``history.jsonl``, atomically."""
    write_csv_atomic(out_dir / "history.csv", [{k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS}
                                               for r in rows], COLUMNS)
    # JSON has no NaN: undefined metrics (e.g. the AUC of a one-class split) become null.
    write_text_atomic(out_dir / "history.jsonl", "".join(json.dumps(json_safe(r)) + "\n" for r in rows))


def plot_curves(path: Path, rows: list[dict], title: str = "") -> None:
    """Loss and accuracy on training (augmented crops) and held-out (centred crops) patches."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "loss", "BCE loss"), (axes[1], "acc", "accuracy (threshold 0.5)")):
        ax.plot(epochs, [r["train_" + key] for r in rows], color="tab:blue", label="train (random crops, flips)")
        val = [(r["epoch"], r["val_" + key]) for r in rows if r.get("val_" + key) is not None]
        if val:
            ax.plot(*zip(*val), color="tab:orange", label="held-out (centred crops)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    auc = [(r["epoch"], r["val_auc"]) for r in rows if r.get("val_auc") is not None
           and math.isfinite(r["val_auc"])]
    if auc:
        axes[1].plot(*zip(*auc), color="tab:green", linestyle="--", label="held-out AUC")
    axes[1].set_ylim(0, 1.02)
    for ax in axes:
        ax.legend(loc="best", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
