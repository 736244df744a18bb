"""Lesions and their look-alikes, written into the tissue maps before image formation.

Three lesion kinds cover the BI-RADS ultrasound lexicon's main appearances:

* ``irregular``: an irregular, spiculated, hypoechoic and heterogeneous mass with an
  indistinct margin, often an echogenic halo, and high attenuation, so it casts a
  posterior acoustic shadow (the classic carcinoma, BI-RADS 4-5);
* ``oval``: a circumscribed, parallel (wider than tall), mildly hypoechoic, homogeneous
  ellipsoid with a thin capsule (a fibroadenoma, BI-RADS 3);
* ``cyst``: an anechoic fluid ellipsoid with a sharp bright wall; fluid barely attenuates,
  so the tissue behind it shows posterior enhancement, and refraction at its lateral walls
  draws thin edge shadows (BI-RADS 2).

Hard negatives (*mimics*) are drawn with the same machinery but get no label: fat lobules
(hypoechoic ovals, close in look to an ``oval`` mass) and shadows without a mass (a
strongly attenuating ligament edge, close to an ``irregular`` mass's shadow). A detector
that only learns "dark blob" or "dark column" fails on them, as on real scans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats, float3
from .anatomy import FAT, GLAND
from .fields import smooth_noise
from .shapes import Box, Ellipsoid, box_around, ellipsoid_distance, irregular_threshold, segment_distance, soft_inside

KINDS = ("irregular", "oval", "cyst")
MIMICS = ("fat_lobule", "shadow")
BIRADS = {"cyst": 2, "oval": 3, "irregular": 4}
MIN_DIAMETER_MM, MAX_DIAMETER_MM = 4.0, 20.0


@dataclass
class Lesion:
    """One simulated finding. Indices are continuous ``(k, j, i)``; ``centroid_kji`` is the
    centre of mass of its mask (the "true centre"), ``center_kji`` the nominal shape centre."""

    kind: str
    diameter_mm: float
    ellipsoid: Ellipsoid
    id: int = 0                       # mask label (0 for mimics)
    birads: int = 1
    centroid_kji: tuple = ()
    voxels: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def center_kji(self) -> tuple:
        return self.ellipsoid.center_kji

    @property
    def centroid_ijk(self) -> tuple:
        """The mask centroid in SimpleITK index order, for ``Geometry.index_to_lps``."""
        return tuple(reversed(self.centroid_kji))

    def footprint_mm(self) -> np.ndarray:
        """Half extent (k, j, i) that the painted shape may reach, for placement."""
        grow = 1.45 if self.kind == "irregular" else 1.1
        return self.ellipsoid.half_extent_mm(grow, pad_mm=0.8)


def sample_semi_axes(rng: np.random.Generator, kind: str, diameter_mm: float):
    """Semi-axes (k, j, i) in mm with the kind's typical proportions; the longest one is
    ``diameter_mm / 2`` so the recorded diameter is the longest, as a radiologist measures."""
    r = diameter_mm / 2.0
    if kind == "irregular":        # often taller than wide ("non-parallel")
        axes = (rng.uniform(0.75, 1.0), rng.uniform(0.7, 1.15), rng.uniform(0.75, 1.0))
    elif kind in ("oval", "fat_lobule"):   # parallel to the skin, wider than tall
        axes = (rng.uniform(0.6, 1.0), rng.uniform(0.4, 0.65), 1.0)
    elif kind == "cyst":
        axes = (rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.85), 1.0)
    elif kind == "shadow":          # a thin sheet (a ligament seen edge-on), 0.5-1 mm thick
        axes = (1.0, rng.uniform(0.25, 0.5) / r, rng.uniform(0.35, 0.7))
    else:
        raise ValueError(f"unknown lesion kind {kind!r}")
    return float3(a / max(axes) * r for a in axes)


def paint(rng: np.random.Generator, lesion: Lesion, echo: np.ndarray, alpha: np.ndarray, mask: np.ndarray | None,
          spacing: Floats) -> None:
    """Write ``lesion`` into the tissue maps (and, for real lesions, its label into ``mask``)."""
    ell = lesion.ellipsoid
    grow = 1.5 if lesion.kind == "irregular" else 1.15
    box = box_around(ell.center_kji, ell.half_extent_mm(grow, pad_mm=1.0), spacing, echo.shape)
    if box.empty:
        return
    e, a = echo[box.slices], alpha[box.slices]
    painter = {"irregular": _irregular, "oval": _oval, "cyst": _cyst,
               "fat_lobule": _fat_lobule, "shadow": _shadow}[lesion.kind]
    sd = painter(rng, lesion, box, e, a, spacing)
    if lesion.id and mask is not None:
        inside = _largest_component(sd < 0)
        if not inside.any():        # tiny lesion at coarse spacing: keep at least its centre
            inside = sd <= sd.min()
        m = mask[box.slices]
        m[inside & (m == 0)] = lesion.id
        idx = np.argwhere(m == lesion.id)
        lesion.voxels = int(len(idx))
        lesion.centroid_kji = tuple(float(v) for v in idx.mean(axis=0) + [s.start for s in box.slices])
    if lesion.kind == "irregular":
        _spicules(rng, lesion, echo, alpha, spacing)


def _largest_component(inside: np.ndarray) -> np.ndarray:
    """One lesion is one connected region: an irregular margin can pinch off small islands,
    which would make the label's centroid and extent ambiguous, so only the largest stays."""
    labels, n = ndi.label(inside)
    if n <= 1:
        return inside
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def _blend(arr: np.ndarray, w: np.ndarray, value: float | np.ndarray) -> None:
    arr += w * (np.float32(value) - arr) if np.ndim(value) == 0 else w * (value - arr)


def _irregular(rng: np.random.Generator, lesion: Lesion, box: Box, e: np.ndarray, a: np.ndarray, spacing: Floats):
    ell = lesion.ellipsoid
    thr = irregular_threshold(rng, ell, box, spacing, rng.uniform(0.15, 0.3))
    sd, _, _ = ellipsoid_distance(ell, box, thr)
    if rng.random() < 0.6:          # echogenic halo: desmoplastic reaction around the mass
        halo = rng.uniform(0.8, 2.0)
        _blend(e, np.exp(-((sd - halo / 2) / np.float32(halo / 2)) ** 2) * (sd > 0),
               GLAND[0] + rng.uniform(2.0, 5.0))
    w = soft_inside(sd, rng.uniform(0.5, 1.0))
    inner = rng.uniform(-21.0, -16.0) + 2.5 * smooth_noise(rng, box.shape, spacing, 1.2)
    _blend(e, w, inner)
    _blend(a, w, rng.uniform(13.0, 24.0))
    return sd


def _oval(rng: np.random.Generator, lesion: Lesion, box: Box, e: np.ndarray, a: np.ndarray, spacing: Floats):
    ell = lesion.ellipsoid
    thr = irregular_threshold(rng, ell, box, spacing, 0.04)   # at most gently lobulated
    sd, _, nj = ellipsoid_distance(ell, box, thr)
    _edge_shadow(rng, sd, nj, a, 0.5)
    if rng.random() < 0.8:          # thin echogenic capsule
        _blend(e, np.exp(-(sd / np.float32(0.25)) ** 2), GLAND[0] + 3.0)
    w = soft_inside(sd, 0.3)
    _blend(e, w, rng.uniform(-15.0, -10.0) + 0.8 * smooth_noise(rng, box.shape, spacing, 1.5))
    _blend(a, w, rng.uniform(2.0, 4.0))
    return sd


def _cyst(rng: np.random.Generator, lesion: Lesion, box: Box, e: np.ndarray, a: np.ndarray, spacing: Floats):
    sd, _, nj = ellipsoid_distance(lesion.ellipsoid, box)
    _edge_shadow(rng, sd, nj, a, 0.8)
    _blend(e, np.exp(-(sd / np.float32(0.2)) ** 2), GLAND[0] + 3.0)   # specular wall
    w = soft_inside(sd, 0.15)
    _blend(e, w, -45.0)
    _blend(a, w, 0.2)
    return sd


def _edge_shadow(rng: np.random.Generator, sd: np.ndarray, nj: np.ndarray, a: np.ndarray, probability: float) -> None:
    """Refraction at walls parallel to the beam: thin attenuating rims → edge shadows."""
    if rng.random() < probability:
        rim = np.exp(-((sd - np.float32(0.3)) / np.float32(0.35)) ** 2) * (nj < 0.25)
        _blend(a, rim, rng.uniform(25.0, 45.0))


def _fat_lobule(rng: np.random.Generator, lesion: Lesion, box: Box, e: np.ndarray, a: np.ndarray, spacing: Floats):
    sd, _, _ = ellipsoid_distance(lesion.ellipsoid, box,
                                  irregular_threshold(rng, lesion.ellipsoid, box, spacing, 0.06))
    if rng.random() < 0.5:          # ligament wrapping the lobule
        _blend(e, np.exp(-(sd / np.float32(0.25)) ** 2), GLAND[0] + 2.0)
    w = soft_inside(sd, rng.uniform(0.3, 0.8))
    _blend(e, w, FAT[0] + rng.uniform(0.0, 3.0) + 2.0 * smooth_noise(rng, box.shape, spacing, 2.0))
    _blend(a, w, FAT[1])
    return sd


def _shadow(rng: np.random.Generator, lesion: Lesion, box: Box, e: np.ndarray, a: np.ndarray, spacing: Floats):
    """A bright, strongly attenuating sheet: a shadow with no mass above it."""
    sd, _, _ = ellipsoid_distance(lesion.ellipsoid, box)
    w = soft_inside(sd, 0.3)
    thickness_cm = 2.0 * lesion.ellipsoid.semi_mm[1] / 10.0
    loss_db = rng.uniform(10.0, 22.0)          # round-trip loss across the sheet
    _blend(a, w, loss_db / (2.0 * thickness_cm))
    _blend(e, w, GLAND[0] + rng.uniform(1.0, 4.0))
    return sd


def _spicules(rng: np.random.Generator, lesion: Lesion, echo: np.ndarray, alpha: np.ndarray, spacing: Floats) -> None:
    """Straight lines radiating from the margin, alternately hyper- and hypoechoic."""
    ell = lesion.ellipsoid
    semi = np.asarray(ell.semi_mm, float)
    for n in range(int(rng.integers(5, 13))):
        d = rng.standard_normal(3)
        d[1] *= 0.6                               # mostly in the coronal plane
        d /= np.linalg.norm(d)
        rho = 1.0 / np.sqrt(np.sum((d / semi) ** 2))   # radius of the ellipsoid along d
        p0 = d * rho * 0.85
        p1 = d * rho * rng.uniform(1.4, 2.0)
        half = np.maximum(np.abs(p0), np.abs(p1)) + 1.0
        box = box_around(ell.center_kji, half, spacing, echo.shape)
        if box.empty:
            continue
        dist, t = segment_distance(box, p0, p1)
        width = np.float32(rng.uniform(0.2, 0.35) + 0.25 * min(spacing))
        w = np.exp(-(dist / width) ** 2) * (1.0 - 0.6 * t)
        _blend(echo[box.slices], w, GLAND[0] + 4.0 if n % 2 else -14.0)
        if n % 2 == 0:
            _blend(alpha[box.slices], w, 14.0)


def annotate(rng: np.random.Generator, mask: np.ndarray, lesion: Lesion, spacing: Floats,
             jitter_mm: float = 1.0) -> np.ndarray:
    """The centre as an expert clicks it: the mask centroid plus ~``jitter_mm`` Gaussian
    error, redrawn (with less jitter each time) until it falls inside the lesion.

    Returns a continuous ``(k, j, i)`` index. The point is kept away from voxel borders
    (±0.02 voxel of a half index) so that rounding after a round trip through LPS or RAS
    text in a markups file still lands in the same voxel.
    """
    centroid = np.asarray(lesion.centroid_kji, float)
    sp = np.asarray(spacing, float)
    for attempt in range(24):
        scale = jitter_mm * (0.85 ** attempt) if attempt < 23 else 0.0
        point = centroid + rng.normal(0.0, 1.0, 3) * scale / sp
        if _safely_inside(point, mask, lesion.id):
            return point
    idx = np.argwhere(mask == lesion.id).astype(float)
    return idx[np.argmin((((idx - centroid) * sp) ** 2).sum(axis=1))]


def _safely_inside(point: np.ndarray, mask: np.ndarray, label: int) -> bool:
    frac = np.abs(point - np.floor(point) - 0.5)
    if np.any(frac < 0.02):
        return False
    voxel = np.floor(point + 0.5).astype(int)
    if np.any(voxel < 0) or np.any(voxel >= mask.shape):
        return False
    return bool(mask[tuple(voxel)] == label)
