"""Solid shapes on a bounding box: the geometry shared by lesions and their look-alikes.

Everything is computed on the lesion's bounding box only (never the whole volume), in
millimetres, so a lesion keeps its physical size at any spacing. Shapes are described by a
signed distance (negative inside, in mm), from which both the label mask (``s < 0``) and a
soft partial-volume weight follow: a sharp wall (cyst) is a narrow transition, an
indistinct margin (malignant mass) a wide one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..axes import Floats, Ints
from .fields import smooth_noise, smoothstep


@dataclass(frozen=True)
class Ellipsoid:
    """Centre (continuous index k, j, i), semi-axes (mm, k j i before the rotation) and a
    rotation ``theta`` about the beam axis (lesions lie at any angle in the coronal plane)."""

    center_kji: tuple[float, float, float]
    semi_mm: tuple[float, float, float]
    theta: float = 0.0

    def half_extent_mm(self, grow: float = 1.0, pad_mm: float = 0.0) -> np.ndarray:
        """Half size of an axis-aligned box around the (rotated) ellipsoid, per axis."""
        ak, aj, ai = self.semi_mm
        c, s = abs(np.cos(self.theta)), abs(np.sin(self.theta))
        ext_k = np.hypot(ak * c, ai * s)
        ext_i = np.hypot(ai * c, ak * s)
        return np.array([ext_k, aj, ext_i]) * grow + pad_mm


@dataclass
class Box:
    """A bounding box: index slices plus the mm offsets of its voxels from a centre."""

    slices: tuple[slice, slice, slice]
    offsets: tuple[np.ndarray, np.ndarray, np.ndarray]  # broadcastable (k,1,1) (1,j,1) (1,1,i)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.slices)

    @property
    def empty(self) -> bool:
        return min(self.shape) <= 0


def box_around(center_kji: Floats, half_mm: Floats, spacing: Floats, shape: Ints) -> Box:
    """The voxels within ``half_mm`` of ``center_kji`` (clipped to the volume)."""
    slices: list[slice] = []
    offsets: list[np.ndarray] = []
    for ax in range(3):
        c, h = float(center_kji[ax]), float(half_mm[ax]) / float(spacing[ax])
        lo = int(np.clip(np.floor(c - h), 0, shape[ax]))
        hi = int(np.clip(np.ceil(c + h) + 1, lo, shape[ax]))
        off = (np.arange(lo, hi, dtype=np.float32) - np.float32(c)) * np.float32(spacing[ax])
        bshape = [1, 1, 1]
        bshape[ax] = hi - lo
        slices.append(slice(lo, hi))
        offsets.append(off.reshape(bshape))
    return Box((slices[0], slices[1], slices[2]), (offsets[0], offsets[1], offsets[2]))


def ellipsoid_distance(ell: Ellipsoid, box: Box, threshold: float | np.ndarray = 1.0):
    """Approximate signed distance (mm) to the ellipsoid surface scaled by ``threshold``.

    ``threshold`` may be an array over the box: a radial perturbation that makes the margin
    lobulated or irregular. Returns ``(distance, normalised radius r, beam component of the
    surface normal)``; the last one finds the lateral walls where refraction shadows start.
    """
    dk, dj, di = box.offsets
    ak, aj, ai = (np.float32(a) for a in ell.semi_mm)
    c, s = np.float32(np.cos(ell.theta)), np.float32(np.sin(ell.theta))
    u = c * di + s * dk           # lateral axis of the lesion
    v = c * dk - s * di           # elevational axis of the lesion
    q = (u / ai) ** 2 + (v / ak) ** 2 + (dj / aj) ** 2
    r = np.sqrt(q)
    dist = np.sqrt(u * u + v * v + dj * dj)
    sd = dist * (r - threshold) / np.maximum(r, np.float32(1e-6))
    # Gradient of q: (u/ai², dj/aj², v/ak²) in the rotated frame; its beam share.
    gu, gj, gv = u / ai ** 2, dj / aj ** 2, v / ak ** 2
    nj = np.abs(gj) / np.maximum(np.sqrt(gu * gu + gj * gj + gv * gv), np.float32(1e-9))
    return sd.astype(np.float32), r, nj


def soft_inside(sd: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume weight: 1 inside, 0 outside, linear over ``edge_mm`` across the wall."""
    return smoothstep(-sd / np.float32(max(edge_mm, 1e-3)))


def irregular_threshold(rng: np.random.Generator, ell: Ellipsoid, box: Box, spacing: Floats,
                        amount: float) -> np.ndarray:
    """A radial perturbation field for irregular (lobulated, angular) margins.

    Two octaves of smooth noise over the box: a coarse one for gross lobulation and a fine
    one for the angular, microlobulated margin typical of malignancy. Clipped so the shape
    stays within the 1.5× box used for it.
    """
    r_mean = float(np.mean(ell.semi_mm))
    coarse = smooth_noise(rng, box.shape, spacing, max(0.45 * r_mean, 1.0))
    fine = smooth_noise(rng, box.shape, spacing, max(0.15 * r_mean, 0.6))
    thr = 1.0 + amount * coarse + 0.35 * amount * fine
    return np.clip(thr, 0.55, 1.4).astype(np.float32)


def segment_distance(box: Box, p0: Floats, p1: Floats) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) of each box voxel to the segment p0→p1 (mm offsets from the box's
    centre) and the position along it (0..1): the geometry of a spicule."""
    dk, dj, di = box.offsets
    d = np.asarray(p1, np.float32) - np.asarray(p0, np.float32)
    length2 = max(float(d @ d), 1e-9)
    rk, rj, ri = dk - p0[0], dj - p0[1], di - p0[2]
    t = np.clip((rk * d[0] + rj * d[1] + ri * d[2]) / np.float32(length2), 0.0, 1.0)
    ek, ej, ei = rk - t * d[0], rj - t * d[1], ri - t * d[2]
    return np.sqrt(ek * ek + ej * ej + ei * ei), t
