"""Are the candidate scores probabilities? Reliability diagrams, ECE and Brier score.

``blcam detect`` reports each candidate's score as the sigmoid of the crop-level logit at
that place, or through the model's score map when it is calibrated
(:mod:`blcam.detect.candidates`): a claim that the candidate holds a lesion with that
probability. Whether the claim holds is measured here, against the hit test of
:func:`.localisation.hit_matrix` (a candidate is a positive when it hits any lesion), and
likewise for the volume score (the best candidate) against the volume's label:

* **reliability diagram**: scores in :data:`CALIBRATION_BINS` equal-width bins over [0, 1];
  per bin the mean score against the observed hit fraction (a calibrated detector lies on
  the diagonal), with the count;
* **ECE** (expected calibration error): the count-weighted mean of
  ``|mean score − hit fraction|`` over the bins;
* **Brier score**: the mean of ``(score − outcome)²``, calibration and sharpness together.

The network is trained on crops, about one lesion crop in eight, so the raw sigmoid of its
crop logit is not the probability that a *candidate* hits a lesion; ``blcam calibrate``
fits that map (:mod:`blcam.score_calibration`). For detections of a calibrated model the
report also scores the network's raw sigmoid of the same candidates (``raw``), so the
gain is seen on volumes the map was not fitted on.
"""

from __future__ import annotations

import numpy as np

from ..axes import Floats, PathLike
from ..errors import BlcamError
from ..score_calibration import sigmoid
from .breakdown import fmt
from .localisation import VolumeDetections, VolumeTruth, hit_matrix

CALIBRATION_BINS = 10


def reliability(scores: Floats, outcomes: Floats, bins: int = CALIBRATION_BINS) -> dict:
    """ECE, Brier score and per-bin ``(range, count, mean score, hit fraction)`` (module doc)."""
    scores = np.asarray(scores, float).reshape(-1)
    outcomes = np.asarray(outcomes, float).reshape(-1)
    which = np.minimum((scores * bins).astype(int), bins - 1)  # a score of 1.0 joins the top bin
    table = []
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        table.append({"low": b / bins, "high": (b + 1) / bins, "count": count,
                      "mean_score": float(scores[inside].mean()) if count else float("nan"),
                      "hit_fraction": float(outcomes[inside].mean()) if count else float("nan")})
    n = len(scores)
    ece = sum(r["count"] / n * abs(r["mean_score"] - r["hit_fraction"]) for r in table if r["count"]) \
        if n else float("nan")
    brier = float(np.mean((scores - outcomes) ** 2)) if n else float("nan")
    return {"n": n, "ece": float(ece), "brier": brier, "bins": table}


def calibration(truths: list[VolumeTruth], dets: list[VolumeDetections], hit_mm: float) -> dict:
    """Candidate-level reliability (score vs hits a lesion) with the volume-level one under ``volume``."""
    scores, outcomes = [], []
    for t, d in zip(truths, dets):
        s = np.asarray(d.scores, float)
        if len(s) and not (np.all(np.isfinite(s)) and s.min() >= 0 and s.max() <= 1):
            raise BlcamError(f"{d.name}: candidate scores must be probabilities in [0, 1] (as 'blcam detect' "
                             f"writes them), found {s.min():g}…{s.max():g}")
        scores.append(s)
        outcomes.append(hit_matrix(d.points_lps, t, hit_mm).any(axis=1))
    hit = np.concatenate(outcomes) if outcomes else np.zeros(0)
    lesion = [t.lesion for t in truths]
    raw = None
    if dets and all(d.calibrated and d.logits is not None and d.volume_logit is not None for d in dets):
        raw = (np.concatenate([np.asarray(d.logits, float) for d in dets]),
               [float(d.volume_logit or 0.0) for d in dets])
    return scores_reliability(np.concatenate(scores) if scores else [], hit,
                              np.clip([d.volume_score for d in dets], 0.0, 1.0), lesion, raw)


def scores_reliability(scores: Floats, hits: Floats, volume_scores: Floats, lesion: Floats,
                       raw: tuple[Floats, Floats] | None = None) -> dict:
    """The reliability record of :func:`calibration` and of a ``blcam calibrate`` fit: candidate
    scores against hits, ``volume`` scores against lesion volumes and, given the raw
    ``(candidate logits, volume logits)`` behind calibrated scores, ``raw``: the same for the
    network's plain sigmoid of them."""
    result = reliability(scores, hits)
    result["volume"] = reliability(volume_scores, lesion)
    if raw is not None:
        result["raw"] = {"candidate": reliability(sigmoid(raw[0]), hits),
                         "volume": reliability(sigmoid(raw[1]), lesion)}
    return result


def calibration_table(cal: dict) -> list[list[str]]:
    """Header + rows (candidates, volumes) of ECE and Brier for the reports."""
    rows = [["scores", "n", "ECE", "Brier score"],
            ["candidate score vs hits a lesion", str(cal["n"]), fmt(cal["ece"]), fmt(cal["brier"])],
            ["volume score vs lesion volume", str(cal["volume"]["n"]), fmt(cal["volume"]["ece"]),
             fmt(cal["volume"]["brier"])]]
    raw = cal.get("raw")
    if raw:
        rows[1][0] += " (calibrated)"
        rows[2][0] += " (calibrated)"
        rows += [[f"{what}, the network's raw sigmoid", str(raw[key]["n"]), fmt(raw[key]["ece"]),
                  fmt(raw[key]["brier"])] for key, what in (("candidate", "candidate score"),
                                                            ("volume", "volume score"))]
    return rows


def bins_table(cal: dict) -> list[list[str]]:
    """Header + one row per bin of the candidate reliability diagram."""
    return [["score bin", "candidates", "mean score", "hit fraction"]] + [
        [f"{b['low']:.1f}–{b['high']:.1f}", str(b["count"]), fmt(b["mean_score"], missing="–"),
         fmt(b["hit_fraction"], missing="–")]
        for b in cal["bins"]]


def plot_calibration(path: PathLike, cal: dict) -> None:
    """Two reliability diagrams side by side: candidates, then volumes; counts over the points."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .localisation import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.3))
    raw = cal.get("raw") or {}
    for ax, part, title, what, before in (
            (axes[0], cal, "candidates", "hit a lesion", raw.get("candidate")),
            (axes[1], cal["volume"], "volumes (best candidate)", "lesion volume", raw.get("volume"))):
        used = [b for b in part["bins"] if b["count"]]
        ax.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
        if before:                    # the same candidates' raw sigmoid, before the model's score map
            shown = [b for b in before["bins"] if b["count"]]
            ax.plot([b["mean_score"] for b in shown], [b["hit_fraction"] for b in shown], "s--", color="tab:grey",
                    alpha=0.7, label=f"raw sigmoid: ECE {before['ece']:.3f}, Brier {before['brier']:.3f}")
        ax.bar([(b["low"] + b["high"]) / 2 for b in used], [b["hit_fraction"] for b in used],
               width=1 / len(part["bins"]), alpha=0.25, color="tab:blue", edgecolor="tab:blue")
        ax.plot([b["mean_score"] for b in used], [b["hit_fraction"] for b in used], "o-", color="tab:blue",
                label=f"ECE {part['ece']:.3f}, Brier {part['brier']:.3f}")
        for b in used:
            ax.annotate(str(b["count"]), (b["mean_score"], b["hit_fraction"]), textcoords="offset points",
                        xytext=(0, 5), ha="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.08)
        ax.set_xlabel("score (bin mean)")
        ax.set_ylabel(f"fraction that {what}")
        ax.set_title(f"{title}: {part['n']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)
