"""Lesion candidates from a lesion map: where, how likely, how large.

* **Where**: local maxima of the local-logit grid (the network's own evidence at each
  feature voxel), refined below the grid spacing by a parabola through each peak and its two
  neighbours per axis, then mapped to the voxel at the centre of that feature's receptive
  field and to LPS millimetres through the volume's full geometry.
* **Non-maximum suppression in millimetres**: peaks are visited from the strongest local
  evidence down, and any peak within ``nms_mm`` (physical distance, so anisotropic ABUS
  voxels are handled) of a kept one is dropped. Ordering by local evidence, not by the
  smooth crop-level score, keeps the peak *on* the lesion rather than a weaker neighbour
  whose crop happens to hold more positive context.
* **How likely**: the crop-level logit at the peak (:meth:`LesionMap.crop_logit`): what the
  network would say for a training-sized crop centred there. Candidates are ranked by it. The
  score is its sigmoid, or, for a model calibrated by ``blcam calibrate``, the probability that
  the candidate hits a lesion (:mod:`blcam.score_calibration`); the volume score comes from the
  highest logit, through the volume map when there is one.
* **How large**: the extent, along each voxel axis in mm, of the connected region of the
  heatmap above half the peak's own heatmap value (full width at half maximum), searched
  within two crop sizes around the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats, Ints, float3, int3
from ..cam.maps import LesionMap
from ..io.volume import Geometry
from ..score_calibration import ScoreCalibration


@dataclass
class Candidate:
    """One lesion candidate (indices ``(k, j, i)`` continuous, LPS in mm, sizes along ``i, j, k``)."""

    score: float
    crop_logit: float
    local_logit: float
    index_kji: tuple[float, float, float]
    lps: tuple[float, float, float]
    size_mm_ijk: tuple[float, float, float]

    @property
    def voxel_ijk(self) -> tuple[int, int, int]:
        """Nearest voxel, ``(i, j, k)`` as Slicer and ITK write indices."""
        return int3(np.floor(v + 0.5) for v in self.index_kji[::-1])


def _refine(grid: np.ndarray, peak: Ints) -> np.ndarray:
    """Sub-cell peak position: vertex of the parabola through the peak and its neighbours."""
    pos = np.asarray(peak, float)
    for a in range(3):
        if 0 < peak[a] < grid.shape[a] - 1:
            lo, hi = list(peak), list(peak)
            lo[a] -= 1
            hi[a] += 1
            fm, f0, fp = grid[tuple(lo)], grid[tuple(peak)], grid[tuple(hi)]
            curv = fm - 2 * f0 + fp
            if curv < 0:
                pos[a] += float(np.clip(0.5 * (fm - fp) / curv, -0.5, 0.5))
    return pos


def peak_cells(grid: np.ndarray) -> np.ndarray:
    """Cells ``(n, 3)`` that are maxima of their 3×3×3 neighbourhood, strongest first."""
    top = ndi.maximum_filter(grid, size=3, mode="nearest")
    cells = np.argwhere(grid >= top)
    return cells[np.argsort(-grid[tuple(cells.T)], kind="stable")]


def half_max_extent(heatmap: np.ndarray, index_kji: Floats, window: Ints, spacing_kji: Floats) -> tuple[float, float,
                    float]:
    """FWHM-style size ``(i, j, k)`` in mm of the heatmap blob containing ``index_kji``."""
    centre = np.clip(np.floor(np.asarray(index_kji) + 0.5).astype(int), 0, np.asarray(heatmap.shape) - 1)
    lo = np.maximum(centre - np.asarray(window), 0)
    hi = np.minimum(centre + np.asarray(window) + 1, heatmap.shape)
    box = heatmap[tuple(slice(a, b) for a, b in zip(lo, hi))]
    peak = float(heatmap[tuple(centre)])
    if peak <= 0:
        return (0.0, 0.0, 0.0)
    labels, _ = ndi.label(box >= 0.5 * peak)
    region = np.argwhere(labels == labels[tuple(centre - lo)])
    extent = (region.max(0) - region.min(0) + 1) * np.asarray(spacing_kji, float)
    return float3(extent[::-1])


def ranked_candidates(lmap: LesionMap, geometry: Geometry, nms_mm: float = 10.0,
                      calibration: ScoreCalibration | None = None) -> list[Candidate]:
    """Every peak that survives NMS, best (highest crop logit) first, without sizes."""
    cal = ScoreCalibration() if calibration is None else calibration
    crop_logit = lmap.crop_logit()
    prob = cal.candidate(crop_logit)
    kept_lps: list[np.ndarray] = []
    kept: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]] = []
    for cell in peak_cells(lmap.logit):
        pos = lmap.feature_to_index(_refine(lmap.logit, cell))
        lps = geometry.index_to_lps(pos[::-1])
        if kept_lps and np.min(np.linalg.norm(np.asarray(kept_lps) - lps, axis=1)) < nms_mm:
            continue
        kept_lps.append(lps)
        kept.append((tuple(cell), pos, lps))
    candidates = [Candidate(float(prob[c]), float(crop_logit[c]), float(lmap.logit[c]), float3(pos), float3(lps),
                            (0.0, 0.0, 0.0)) for c, pos, lps in kept]
    # By the logit: a calibrated score is an increasing function of it, but may round to 1.0.
    candidates.sort(key=lambda cand: -cand.crop_logit)
    return candidates


def select_candidates(ranked: list[Candidate], lmap: LesionMap, geometry: Geometry, top_k: int = 10,
                      min_score: float = 0.0, calibration: ScoreCalibration | None = None
                      ) -> tuple[list[Candidate], float]:
    """The best ``top_k`` of :func:`ranked_candidates` scoring at least ``min_score`` (the scores as
    written: calibrated ones when calibrated), with their sizes, and the volume score: the top
    logit through the volume map, whatever ``min_score`` keeps."""
    cal = ScoreCalibration() if calibration is None else calibration
    volume_score = float(cal.volume(ranked[0].crop_logit)) if ranked else 0.0
    candidates = [c for c in ranked if c.score >= min_score][:top_k]
    spacing_kji = tuple(reversed(geometry.spacing))
    for c in candidates:
        c.size_mm_ijk = half_max_extent(lmap.heatmap, c.index_kji, lmap.crop, spacing_kji)
    return candidates, volume_score


def find_candidates(lmap: LesionMap, geometry: Geometry, top_k: int = 10, min_score: float = 0.0,
                    nms_mm: float = 10.0, calibration: ScoreCalibration | None = None) -> tuple[list[Candidate], float]:
    """Candidates (best first) and the volume score: :func:`select_candidates` of
    :func:`ranked_candidates`."""
    ranked = ranked_candidates(lmap, geometry, nms_mm, calibration)
    return select_candidates(ranked, lmap, geometry, top_k, min_score, calibration)
