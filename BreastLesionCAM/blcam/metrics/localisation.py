"""Localisation metrics for weakly supervised detection: the paper's open question, answered.

The paper notes that IoU-style metrics make little sense when the ground truth is a single
point per lesion. These metrics need only a lesion centre, and use a lesion mask where one
exists (phantoms, segmented cohorts):

* **hit**: a candidate hits a lesion when it lies inside the lesion's mask component, or,
  without a mask, within ``hit_mm`` of the annotated centre;
* **pointing game**: per lesion, among the ``n`` best candidates of its volume (``n`` = the
  volume's number of lesions; the classic "hottest point" for one lesion), take the one
  nearest the lesion: the share of lesions it hits;
* **distance**: from that candidate to the annotated centre (median and mean, mm);
* **FROC** (the ABUS detection challenge's convention): candidates of all volumes ranked by
  score; at each threshold a lesion is found if any candidate above it hits it, and a
  candidate is a false positive if it hits no lesion (a second hit on a found lesion is
  neither). Sensitivity is read at 0.125, 0.25, 0.5, 1, 2, 4 and 8 false positives per
  volume (the best sensitivity with no more false positives than that), and averaged;
* **volume AUC**: ROC AUC of the volume score (highest candidate) for lesion vs healthy
  volumes, via :mod:`.classification`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from ..axes import Floats, PathLike
from ..io.volume import Geometry
from .classification import roc_auc

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class VolumeTruth:
    """A volume's reference: lesion centres (LPS mm) and, optionally, a label mask.

    ``mask_labels[n]`` is the mask value of lesion ``n`` (0: not in the mask → radius rule).
    """

    name: str
    lesion: bool
    centres_lps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    mask: np.ndarray | None = None
    geometry: Geometry | None = None
    mask_labels: list[int] = field(default_factory=list)

    @classmethod
    def with_mask(cls, name: str, lesion: bool, centres_lps: ArrayLike, mask: np.ndarray | None,
                  geometry: Geometry | None, hit_mm: float) -> VolumeTruth:
        """Attach each centre to the mask component it lies in (or the nearest within ``hit_mm``)."""
        centres = np.asarray(centres_lps, float).reshape(-1, 3)
        labels = []
        if mask is not None:
            if geometry is None:
                raise ValueError(f"{name}: a lesion mask needs the geometry it lies on")
            voxels = np.argwhere(mask > 0)
            spacing_kji = np.asarray(geometry.spacing[::-1])
            for c in geometry.lps_to_index(centres)[:, ::-1]:
                label = _label_at(mask, c)
                if label == 0 and len(voxels):
                    d = np.linalg.norm((voxels - c) * spacing_kji, axis=1)
                    label = int(mask[tuple(voxels[np.argmin(d)])]) if d.min() <= hit_mm else 0
                labels.append(label)
        return cls(name, lesion, centres, mask, geometry, labels or [0] * len(centres))


@dataclass
class VolumeDetections:
    """A volume's candidates (LPS mm, scores; best first) and its volume score; with the
    network's raw crop logits behind them where Detect wrote them (``calibrated``: the scores
    went through a model's score maps, :mod:`blcam.score_calibration`)."""

    name: str
    points_lps: np.ndarray
    scores: np.ndarray
    volume_score: float
    logits: np.ndarray | None = None
    volume_logit: float | None = None
    calibrated: bool = False


def _label_at(mask: np.ndarray, index_kji: Floats) -> int:
    idx = np.floor(np.asarray(index_kji) + 0.5).astype(int)
    if np.any(idx < 0) or np.any(idx >= mask.shape):
        return 0
    return int(mask[tuple(idx)])


def hit_matrix(points_lps: np.ndarray, truth: VolumeTruth, hit_mm: float) -> np.ndarray:
    """``(candidates, lesions)`` booleans: does candidate ``m`` hit lesion ``n``."""
    points = np.asarray(points_lps, float).reshape(-1, 3)
    hits = np.zeros((len(points), len(truth.centres_lps)), bool)
    if not len(points) or not len(truth.centres_lps):
        return hits
    dist = np.linalg.norm(points[:, None, :] - truth.centres_lps[None, :, :], axis=2)
    if truth.mask is None:
        under = [0] * len(points)
    else:
        assert truth.geometry is not None, "with_mask checked that a mask has its geometry"
        under = [_label_at(truth.mask, p) for p in truth.geometry.lps_to_index(points)[:, ::-1]]
    for n, label in enumerate(truth.mask_labels):
        hits[:, n] = (np.asarray(under) == label) if label > 0 else dist[:, n] <= hit_mm
    return hits


def pointing(truth: VolumeTruth, det: VolumeDetections, hit_mm: float) -> list[dict]:
    """Per lesion: hit by the nearest of the volume's ``n`` best candidates, and its distance."""
    n = len(truth.centres_lps)
    top = det.points_lps[:n]
    hits = hit_matrix(top, truth, hit_mm)
    rows = []
    for lesion in range(n):
        if not len(top):
            rows.append({"volume": truth.name, "lesion": lesion + 1, "hit": False, "distance_mm": float("nan")})
            continue
        d = np.linalg.norm(top - truth.centres_lps[lesion], axis=1)
        m = int(np.argmin(d))
        row = {"volume": truth.name, "lesion": lesion + 1, "hit": bool(hits[m, lesion]), "distance_mm": float(d[m])}
        if truth.geometry is not None:
            both = truth.geometry.lps_to_index(np.stack([top[m], truth.centres_lps[lesion]]))
            row["offset_kji_voxels"] = [float(v) for v in (both[0] - both[1])[::-1]]
        rows.append(row)
    return rows


def froc(truths: list[VolumeTruth], dets: list[VolumeDetections], hit_mm: float,
         rates: Sequence[float] = FROC_RATES, include: set[tuple[int, int]] | None = None) -> dict:
    """FROC curve and the sensitivities at ``rates`` false positives per volume (module doc).

    ``include``, a set of ``(volume index, lesion index)`` pairs, restricts the lesions that
    count to one group (a lesion kind, a size bin): a candidate that hits only lesions outside
    the group is neither a true nor a false positive for it (it found *a* lesion, just not one
    this curve is about), while a candidate that hits no lesion is a false positive for every
    group, so the groups' curves share one false-positive axis and can be compared.
    """
    events = []  # (score, volume index, counted lesions the candidate hits, hits any lesion)
    n_lesions = sum(len(t.centres_lps) for t in truths) if include is None else len(include)
    for v, (t, d) in enumerate(zip(truths, dets)):
        hits = hit_matrix(d.points_lps, t, hit_mm)
        for m, score in enumerate(d.scores):
            counted = tuple(int(h) for h in np.flatnonzero(hits[m]) if include is None or (v, int(h)) in include)
            events.append((float(score), v, counted, bool(hits[m].any())))
    events.sort(key=lambda e: -e[0])
    found: set[tuple[int, int]] = set()
    fp, curve = 0, [(0.0, 0.0, float("inf"))]
    for n, (score, v, counted, hit_any) in enumerate(events):
        if counted:
            found.update((v, h) for h in counted)
        elif not hit_any:
            fp += 1
        if n + 1 == len(events) or events[n + 1][0] < score:  # ties enter together
            curve.append((fp / max(len(truths), 1), len(found) / max(n_lesions, 1), score))
    fps = np.array([c[0] for c in curve])
    sens = np.array([c[1] for c in curve])
    at = [float(sens[fps <= r].max()) if n_lesions else float("nan") for r in rates]
    return {"rates": list(rates), "sensitivity": at, "mean_sensitivity": float(np.mean(at)),
            "curve_fp_per_volume": fps.tolist(), "curve_sensitivity": sens.tolist(),
            "lesions": n_lesions, "volumes": len(truths)}


def evaluate_localisation(truths: list[VolumeTruth], dets: list[VolumeDetections], hit_mm: float = 10.0) -> dict:
    """Pointing game, peak-to-centre distance, FROC and volume AUC of a detected cohort."""
    per_lesion = [row for t, d in zip(truths, dets) for row in pointing(t, d, hit_mm)]
    hits = np.array([r["hit"] for r in per_lesion], bool)
    dist = np.array([r["distance_mm"] for r in per_lesion], float)
    labels = np.array([t.lesion for t in truths], int)
    scores = np.array([d.volume_score for d in dets], float)
    return {"hit_mm": hit_mm, "volumes": len(truths), "lesion_volumes": int(labels.sum()),
            "lesions": len(per_lesion),
            "pointing_game": float(hits.mean()) if len(hits) else float("nan"),
            "distance_mm_median": float(np.nanmedian(dist)) if np.isfinite(dist).any() else float("nan"),
            "distance_mm_mean": float(np.nanmean(dist)) if np.isfinite(dist).any() else float("nan"),
            "offset_kji_voxels_mean": _mean_offset(per_lesion),
            "froc": froc(truths, dets, hit_mm), "volume_auc": roc_auc(labels, scores),
            "per_lesion": per_lesion,
            "per_volume": [{"volume": t.name, "label": "lesion" if t.lesion else "healthy",
                            "volume_score": d.volume_score} for t, d in zip(truths, dets)]}


def _mean_offset(per_lesion: list[dict]) -> list[float] | None:
    """Mean signed peak − centre offset per voxel axis ``(k, j, i)``, over hit lesions.

    A systematic offset means the heatmap is displaced (e.g. a wrong feature-placement
    convention, :func:`blcam.cam.maps.feature_offset`); misses are left out, as their nearest
    peak belongs to something else.
    """
    offsets = [r["offset_kji_voxels"] for r in per_lesion if r["hit"] and "offset_kji_voxels" in r]
    return [float(v) for v in np.mean(offsets, axis=0)] if offsets else None


def froc_axes(ax: Axes) -> None:
    """The FROC plots' common frame: log₂ false positives per volume, the seven rates marked."""
    ax.set_xscale("log", base=2)
    ax.set_xlim(FROC_RATES[0] / 2, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(FROC_RATES, [f"{r:g}" for r in FROC_RATES])
    ax.set_xlabel("false positives per volume")
    ax.set_ylabel("lesion sensitivity")
    ax.grid(alpha=0.3)


def froc_step(ax: Axes, f: dict, **style: Any) -> None:
    """One FROC curve; zero false positives drawn at the left edge (a log axis has no 0)."""
    fps = np.maximum(np.asarray(f["curve_fp_per_volume"]), FROC_RATES[0] / 2)
    ax.step(fps, f["curve_sensitivity"], where="post", **style)


def save_figure(fig: Figure, path: PathLike) -> None:
    """Write a matplotlib figure as PNG atomically and release it."""
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_froc(path: PathLike, result: dict, title: str = "") -> None:
    """FROC curve (log false positives per volume) with the challenge's seven points marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = result["froc"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    froc_step(ax, f, color="tab:blue", label="FROC")
    ax.plot(f["rates"], f["sensitivity"], "o", color="tab:red",
            label=f"mean sensitivity {f['mean_sensitivity']:.3f}")
    froc_axes(ax)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"{f['lesions']} lesions in {f['volumes']} volumes; pointing game "
                 f"{result['pointing_game']:.2f}", fontsize=9)
    save_figure(fig, path)
