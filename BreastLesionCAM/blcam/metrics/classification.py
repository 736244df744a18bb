"""Binary classification metrics: tie-aware rank AUC, ROC curve, thresholded rates.

Why hand-written: scikit-learn is not a dependency (Slicer's Python would need it
installed), and the definitions matter for the paper's Table 2: AUC is the Mann-Whitney
probability that a random positive scores above a random negative, counting ties as one
half, which is exactly the area under the ROC curve built with tied scores as one step.
A metric that is undefined for the input (AUC with only one class present, sensitivity
without positives) is ``nan``, never a silent 0 or 1.
"""

from __future__ import annotations

import numpy as np

from ..axes import Floats, Ints
from ..errors import BlcamError


def _check(labels: Ints, scores: Floats) -> tuple[np.ndarray, np.ndarray]:
    """Labels as a bool array and scores as float64, same length, finite scores."""
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise BlcamError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise BlcamError(f"labels must be 0 or 1, got {sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}")
    if not np.isfinite(s).all():
        raise BlcamError(f"{int((~np.isfinite(s)).sum())} score(s) are not finite")
    return y.astype(bool), s


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # Boundaries of runs of equal values in the sorted order.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], values.size]
    run_rank = (starts + ends + 1) / 2.0      # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(labels: Ints, scores: Floats) -> float:
    """Area under the ROC curve (ties count one half); ``nan`` if a class is missing."""
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = midranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: Ints, scores: Floats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score, from (0, 0) to (1, 1).

    Point ``n`` classifies ``score >= thresholds[n]`` as positive; the first point uses an
    infinite threshold (nothing positive). Tied scores move the curve diagonally, so the
    trapezoidal area equals :func:`roc_auc`. Rates are ``nan`` for a missing class.
    """
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(y_sorted)[last_of_run]
    fps = (last_of_run + 1) - tps
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    thresholds = np.r_[np.inf, s_sorted[last_of_run]]
    n_pos, n_neg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / n_pos if n_pos else np.full(tps.shape, np.nan)
        fpr = fps / n_neg if n_neg else np.full(fps.shape, np.nan)
    return fpr.astype(np.float64), tpr.astype(np.float64), thresholds


def confusion(labels: Ints, scores: Floats, threshold: float = 0.5) -> dict:
    """Counts of true/false positives/negatives for ``score >= threshold`` as positive."""
    y, s = _check(labels, scores)
    pred = s >= threshold
    return {"tp": int((pred & y).sum()), "fp": int((pred & ~y).sum()),
            "tn": int((~pred & ~y).sum()), "fn": int((~pred & y).sum())}


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def binary_summary(labels: Ints, scores: Floats, threshold: float = 0.5) -> dict:
    """AUC, accuracy, sensitivity, specificity at ``threshold``, with the counts behind them."""
    c = confusion(labels, scores, threshold)
    n = c["tp"] + c["fp"] + c["tn"] + c["fn"]
    return {"auc": roc_auc(labels, scores),
            "accuracy": _ratio(c["tp"] + c["tn"], n),
            "sensitivity": _ratio(c["tp"], c["tp"] + c["fn"]),
            "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
            "threshold": float(threshold), "n": n, "n_positive": c["tp"] + c["fn"],
            "n_negative": c["tn"] + c["fp"], **c}
