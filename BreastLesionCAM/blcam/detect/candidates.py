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
* **How likely**: the calibrated crop-level probability at the peak
  (:meth:`LesionMap.crop_probability`): what the network would say for a training-sized crop
  centred there. Candidates are ranked by it; the volume score is the highest of them.
* **How large**: the extent, along each voxel axis in mm, of the connected region of the
  heatmap above half the peak's own heatmap value (full width at half maximum), searched
  within two crop sizes around the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats, Ints, float3, int3
from ..cam.maps import LesionMap, sigmoid
from ..io.volume import Geometry


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


def find_candidates(lmap: LesionMap, geometry: Geometry, top_k: int = 10, min_score: float = 0.0,
                    nms_mm: float = 10.0) -> tuple[list[Candidate], float]:
    """Candidates (best first) and the volume score (highest candidate score before filtering)."""
    crop_logit = lmap.crop_logit()
    prob = sigmoid(crop_logit)
    kept_lps: list[np.ndarray] = []
    kept: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]] = []
    for cell in peak_cells(lmap.logit):
        pos = lmap.feature_to_index(_refine(lmap.logit, cell))
        lps = geometry.index_to_lps(pos[::-1])
        if kept_lps and np.min(np.linalg.norm(np.asarray(kept_lps) - lps, axis=1)) < nms_mm:
            continue
        kept_lps.append(lps)
        kept.append((tuple(cell), pos, lps))
    spacing_kji = tuple(reversed(geometry.spacing))
    candidates = [Candidate(float(prob[c]), float(crop_logit[c]), float(lmap.logit[c]), float3(pos), float3(lps),
                            (0.0, 0.0, 0.0)) for c, pos, lps in kept]
    candidates.sort(key=lambda cand: -cand.score)
    volume_score = candidates[0].score if candidates else 0.0
    candidates = [c for c in candidates if c.score >= min_score][:top_k]
    for c in candidates:
        c.size_mm_ijk = half_max_extent(lmap.heatmap, c.index_kji, lmap.crop, spacing_kji)
    return candidates, volume_score
