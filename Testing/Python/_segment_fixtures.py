"""Shared pieces of the heatmap → segmentation tests: a phantom lesion with its true mask on an
oblique, anisotropic grid, and a heatmap as coarse as Grad-CAM's that is hot over it."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from blcam.io.volume import Geometry
from blcam.phantom import LesionSpec, make_volume

SPACING_KJI = (0.5, 0.2, 0.3)          # mm: thick slices, fine depth, as ABUS volumes are
SHAPE_KJI = (48, 110, 80)              # 24 × 22 × 24 mm
_C, _S = math.cos(math.radians(20)), math.sin(math.radians(20))
OBLIQUE_FLIPPED = tuple(float(v) for v in (np.array([[_C, -_S, 0], [_S, _C, 0], [0, 0, 1]])
                                           @ np.diag([-1.0, 1.0, 1.0])).ravel())
GEOMETRY = Geometry(SHAPE_KJI[::-1], SPACING_KJI[::-1], (10.0, -20.0, 5.0), OBLIQUE_FLIPPED)
CAM_CELL_MM = 4.8                      # the network's stride (16 voxels) at the Slicer scenario's 0.3 mm


def phantom_lesion(seed: int, kind: str = "cyst", diameter_mm: float = 14.0, shape=SHAPE_KJI,
                   spacing=SPACING_KJI):
    """``(image uint8, true mask bool, lesion centroid (k, j, i))`` of one phantom lesion."""
    rng = np.random.default_rng(seed)
    image, labels, lesions = make_volume(rng, shape, spacing, lesions=[LesionSpec(kind, diameter_mm)],
                                         hard_negatives=0, ribs=False)
    return image, labels == lesions[0].id, np.asarray(lesions[0].centroid_kji, float)


def gradcam_like_heatmap(mask: np.ndarray, spacing=SPACING_KJI, cell_mm: float = CAM_CELL_MM,
                         seed: int = 0) -> np.ndarray:
    """A heatmap built like Grad-CAM's: the lesion's share of each coarse feature cell (about
    ``cell_mm`` wide), blurred over neighbouring cells, with noise, linearly upsampled to the
    volume's voxels and scaled to [0, 1]. It is hot over the lesion but knows its outline only
    to a cell."""
    rng = np.random.default_rng(seed)
    factors = np.maximum(1, np.round(cell_mm / np.asarray(spacing, float)).astype(int))
    cells = tuple(int(math.ceil(n / f)) for n, f in zip(mask.shape, factors, strict=True))
    padded = np.zeros(tuple(c * f for c, f in zip(cells, factors, strict=True)), np.float32)
    padded[tuple(slice(0, n) for n in mask.shape)] = mask
    coarse = padded.reshape(cells[0], factors[0], cells[1], factors[1], cells[2], factors[2]).mean(axis=(1, 3, 5))
    coarse = ndi.gaussian_filter(coarse, 0.5) + rng.normal(0.0, 0.03, coarse.shape)
    fine = ndi.zoom(coarse, factors, order=1, grid_mode=True, mode="nearest")
    fine = np.clip(fine[tuple(slice(0, n) for n in mask.shape)], 0.0, None)
    return (fine / fine.max()).astype(np.float32)


def outer_layer(mask: np.ndarray) -> np.ndarray:
    """The mask grown by its outer one-voxel (face-neighbour) layer: the voxels that straddle
    the lesion's edge, which a segmentation may count in (partial volume)."""
    return ndi.binary_dilation(mask)
