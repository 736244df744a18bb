"""Snap a candidate onto the dark blob it sits beside: the image says where a small lesion's centre is.

Why. The lesion map lives on the network's feature grid (16 voxels, 8 mm at the demo's
0.5 mm voxels), and refinement (:mod:`.refine`) asks the network at a few voxels' spacing, so
a candidate that found its lesion still lies a few millimetres from the lesion's centre
(median 3.0 mm on the seed-11 validation cohort). For a lesion under about 5 mm that is
outside it: the marker a radiologist sees sits beside the lesion, and the pointing game
counts a miss although the network found it.

What the image knows. Breast lesions are hypoechoic: cysts are anechoic, and carcinomas and
most fibroadenomas are darker than the tissue around them (the BI-RADS ultrasound lexicon).
A dark blob of radius ``r`` gives the scale-normalised Laplacian of Gaussian
``σ² ∇²(G_σ * I)`` (Lindeberg's blob detector) its maximum at the blob's centre, at
``σ ≈ r / √3``. So each candidate moves to the strongest response, over the scales
:data:`SIGMAS_MM` (blobs of about 3-14 mm across), within ``radius_mm`` of where it is.
Where no response there is positive (nothing darker than its surroundings) it stays. The
Laplacian is taken in millimetres, per axis, so anisotropic voxels and any orientation give
the same answer for the same tissue.

Only positions move (and the heatmap sizes read at them): scores, ranking and the heatmap are
the network's. The radius is small, 3 mm by default, so that a darker neighbour (a posterior
shadow, another cyst) a lesion's width away cannot capture the point. On the validation
cohort 2-5 mm gave the same hits (``bench/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats

SIGMAS_MM = (1.0, 2 ** 0.5, 2.0, 2 ** 1.5, 4.0)
DEFAULT_RADIUS_MM = 3.0
TRUNCATE = 3.0            # Gaussian support, in σ


def _normalised_laplacian(image: np.ndarray, spacing: np.ndarray, sigma: float) -> np.ndarray:
    """``σ² ∇²(G_σ * image)``, with σ and the derivatives in millimetres."""
    laplacian = np.zeros(image.shape, np.float32)
    for axis in range(3):
        order = [0, 0, 0]
        order[axis] = 2
        laplacian += ndi.gaussian_filter(image, sigma / spacing, order=order, mode="nearest",
                                         truncate=TRUNCATE) / np.float32(spacing[axis] ** 2)
    return np.float32(sigma ** 2) * laplacian


def blob_response(stored: np.ndarray, lo: np.ndarray, hi: np.ndarray, spacing_kji: Floats,
                  sigmas_mm: Sequence[float] = SIGMAS_MM) -> np.ndarray:
    """The strongest scale-normalised dark-blob response ``max_σ σ² ∇²(G_σ * I)`` over the box
    ``lo:hi`` of ``stored`` (positive where a voxel is darker than around it). Each scale reads
    only the box plus its own Gaussian support, so the small scales cost little."""
    spacing = np.asarray(spacing_kji, float)
    shape = np.asarray(stored.shape)
    best = np.full(tuple(hi - lo), -np.inf, np.float32)
    for sigma in sigmas_mm:
        pad = np.ceil(TRUNCATE * sigma / spacing).astype(int)
        a, b = np.maximum(lo - pad, 0), np.minimum(hi + pad, shape)
        image = stored[tuple(slice(x, y) for x, y in zip(a, b))].astype(np.float32)
        response = _normalised_laplacian(image, spacing, sigma)
        np.maximum(best, response[tuple(slice(x, x + n) for x, n in zip(lo - a, hi - lo))], out=best)
    return best


def snap_to_dark_blob(stored: np.ndarray, index_kji: Floats, spacing_kji: Floats,
                      radius_mm: float = DEFAULT_RADIUS_MM, sigmas_mm: Sequence[float] = SIGMAS_MM
                      ) -> tuple[np.ndarray, float]:
    """The voxel ``(k, j, i)`` within ``radius_mm`` of ``index_kji`` where ``stored`` (the volume
    as Detect normalised it) has its strongest dark blob, and the distance moved in mm; the
    position unchanged (distance 0) where nothing there is darker than its surroundings."""
    start = np.asarray(index_kji, float)
    spacing = np.asarray(spacing_kji, float)
    if radius_mm <= 0:
        return start, 0.0
    shape = np.asarray(stored.shape)
    lo = np.clip(np.floor(start - radius_mm / spacing).astype(int), 0, shape - 1)
    hi = np.clip(np.ceil(start + radius_mm / spacing).astype(int) + 1, lo + 1, shape)
    response = blob_response(stored, lo, hi, spacing, sigmas_mm)
    offsets = np.indices(response.shape).reshape(3, -1).T + lo
    distance = np.linalg.norm((offsets - start) * spacing, axis=1).reshape(response.shape)
    response[distance > radius_mm] = -np.inf
    best = np.unravel_index(int(np.argmax(response)), response.shape)
    if not response[best] > 0:
        return start, 0.0
    return np.asarray(best, float) + lo, float(distance[best])
