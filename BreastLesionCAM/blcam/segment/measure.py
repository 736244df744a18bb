"""Size of a segmented lesion in millimetres: volume and principal diameters, for a report.

A radiologist reports a lesion's volume and its longest diameters. ABUS voxels are strongly
anisotropic and the volume's axes may be oblique to the body, so nothing here counts voxels
along an array axis: every voxel centre goes to LPS through the volume's origin, spacing and
direction, and the diameters are measured along the region's own principal axes (the
eigenvectors of the covariance of its voxel centres), which do not depend on how the scanner
happened to lay out its grid.

A diameter is the region's extent along one principal axis: the spread of its voxel centres
projected on the axis plus the width of one voxel seen along that axis (a voxel is a box, not
a point), so a ball of diameter D measures D on any grid, up to one voxel of discretisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..axes import Ints, float3
from ..io.volume import Geometry


@dataclass(frozen=True)
class RegionMeasurements:
    """What a report needs about one segmented region (lengths in mm, LPS coordinates)."""

    voxels: int
    volume_mm3: float
    diameters_mm: tuple[float, float, float]          # along the principal axes, longest first
    axes_lps: tuple[tuple[float, float, float], ...]  # the principal axes (unit vectors), same order
    centroid_lps: tuple[float, float, float]

    @property
    def equivalent_diameter_mm(self) -> float:
        """Diameter of the ball with the same volume (a size that ignores the shape)."""
        return float((6.0 * self.volume_mm3 / np.pi) ** (1.0 / 3.0))


def measure_region(mask: np.ndarray, geometry: Geometry, offset_kji: Ints = (0, 0, 0)) -> RegionMeasurements:
    """Measure the voxels set in ``mask`` (``(k, j, i)``; ``mask[0, 0, 0]`` is the volume's voxel
    ``offset_kji``, so a region cropped to its bounding box is measured in place)."""
    index_kji = np.argwhere(np.asarray(mask, bool))
    if len(index_kji) == 0:
        raise ValueError("the region is empty: nothing to measure")
    index_ijk = (index_kji + np.asarray(offset_kji, int))[:, ::-1].astype(float)
    points = geometry.index_to_lps(index_ijk)
    centroid = points.mean(axis=0)
    spread = np.cov((points - centroid).T, bias=True) if len(points) > 1 else np.zeros((3, 3))
    values, vectors = np.linalg.eigh(spread)
    axes = vectors[:, np.argsort(-values, kind="stable")].T
    axes *= np.where(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)] < 0, -1.0, 1.0)[:, None]
    edges = np.asarray(geometry.direction, float).reshape(3, 3) @ np.diag(geometry.spacing)  # voxel edges, columns
    projected = points @ axes.T
    voxel_width = np.abs(axes @ edges).sum(axis=1)
    diameters = projected.max(axis=0) - projected.min(axis=0) + voxel_width
    order = np.argsort(-diameters, kind="stable")
    return RegionMeasurements(
        voxels=len(points),
        volume_mm3=float(len(points) * np.prod(geometry.spacing)),
        diameters_mm=float3(diameters[order]),
        axes_lps=(float3(axes[order[0]]), float3(axes[order[1]]), float3(axes[order[2]])),
        centroid_lps=float3(centroid))
