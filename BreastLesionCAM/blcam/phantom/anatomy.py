"""Breast anatomy along the beam: the layered tissue maps a lesion is hidden in.

An ABUS volume is acquired through the skin, so depth (j) crosses the same sequence of
tissues everywhere: skin, subcutaneous fat divided into lobules by Cooper's ligaments, the
bright fibroglandular layer, retromammary fat, the striated pectoral muscle and, in thin
breasts, the ribs with their acoustic shadow. Each boundary is a smooth random surface over
(k, i); each tissue is an echogenicity (dB relative to gland) and an attenuation (dB/cm)
with its own texture. A detector must learn lesions against *this* background: hypoechoic
fat islands in the gland, dark lobules and rib shadows are exactly what it will confuse.

Depths are in millimetres for a ~45 mm deep field of view and shrink proportionally when a
(test) volume is shallower, so every layer stays visible at any shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..axes import Floats, Ints
from .fields import affine, blend, smooth_noise, smoothstep, surface

# (echogenicity dB relative to fibroglandular tissue, one-way attenuation dB/cm)
FAT = (-13.0, 4.0)
GLAND = (0.0, 6.0)
SKIN = (-1.0, 6.0)
MUSCLE = (-10.0, 7.0)
CHEST_WALL = (-11.0, 7.0)
LIGAMENT_DB = 3.0
FASCIA_DB = 4.0
SKIN_LINE_DB = 9.0
RIB_CORTEX_DB = 12.0
BONE_ALPHA = 120.0
NOMINAL_DEPTH_MM = 45.0


@dataclass
class Anatomy:
    """Tissue maps (float32, (k, j, i)) and the depth surfaces (mm, shape (K, 1, I))."""

    echo_db: np.ndarray
    alpha: np.ndarray
    surfaces: dict = field(default_factory=dict)
    has_ribs: bool = False


class _Painter:
    """Writes tissue layers into the two maps, touching only the depth slab that changes.

    Work arrays are updated in place (:func:`.fields.blend`, :func:`.fields.affine`): a
    layer's slab can be most of the volume, and at ABUS size (865×682×354) every float32
    temporary of it costs up to 0.8 GB; the in-place forms keep the same rounding.
    """

    def __init__(self, shape: Ints, spacing: Floats):
        self.shape = tuple(shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.dz = self.spacing[1]
        self.echo = np.empty(self.shape, np.float32)
        self.alpha = np.empty(self.shape, np.float32)

    def depth_mm(self, j0: int, j1: int) -> np.ndarray:
        return ((np.arange(j0, j1, dtype=np.float32) + 0.5) * np.float32(self.dz))[None, :, None]

    def slab(self, top_mm: float, bottom_mm: float) -> tuple[int, int]:
        j0 = int(np.clip(np.floor(top_mm / self.dz) - 1, 0, self.shape[1]))
        j1 = int(np.clip(np.ceil(bottom_mm / self.dz) + 2, 0, self.shape[1]))
        return j0, j1

    def layer(self, top: float | np.ndarray, j0: int, j1: int, echo: float | np.ndarray, alpha: float | np.ndarray,
              edge_mm: float = 0.3) -> None:
        """Tissue (scalars, or arrays covering depth rows ``j0:j1``) from surface ``top``
        down to row ``j1`` (the deepest row where it can still be seen), blended over
        ``edge_mm`` at ``top`` (partial volume). Array values are overwritten."""
        if j1 <= j0:
            return
        t = self.depth_mm(j0, j1) - top
        t /= np.float32(max(edge_mm, 1e-3))
        smoothstep(t, out=t)
        blend(self.echo[:, j0:j1], t, echo)
        blend(self.alpha[:, j0:j1], t, alpha)

    def texture_slab(self, top_mm: float, bottom_mm: float) -> tuple[int, int]:
        """Depth rows a layer (and its texture) must cover, edge blending included."""
        return self.slab(top_mm - 1.0, bottom_mm)

    def line(self, surf: np.ndarray, peak_db: float, width_mm: float) -> None:
        """A thin specular interface (fascia, skin line) following surface ``surf``."""
        j0, j1 = self.slab(float(surf.min()) - 3 * width_mm, float(surf.max()) + 3 * width_mm)
        if j1 <= j0:
            return
        d = self.depth_mm(j0, j1) - surf
        d /= np.float32(width_mm)
        w = np.negative(d)
        w *= d
        del d
        blend(self.echo[:, j0:j1], np.exp(w, out=w), peak_db)


def build_anatomy(rng: np.random.Generator, shape: Ints, spacing: Floats, ribs: bool | None = None
                  ) -> Anatomy:
    """Random layered breast tissue maps for a volume of ``shape`` (k, j, i) and ``spacing``.

    ``ribs`` forces the rib level on or off; ``None`` lets chance decide (about half of the
    volumes, when the field of view is deep enough to reach them).
    """
    K, J, I = shape
    sk, sj, si = (float(s) for s in spacing)
    depth = J * sj
    scale = min(1.0, depth / NOMINAL_DEPTH_MM)
    p = _Painter(shape, spacing)
    ki = (K, I)
    ki_sp = (sk, si)

    skin = surface(rng, ki, ki_sp, 1.6 * scale, 0.15 * scale, 15.0)
    np.maximum(skin, 2.5 * sj, out=skin)
    fat_bottom = (skin + surface(rng, ki, ki_sp, rng.uniform(4.0, 11.0) * scale, 2.2 * scale, 14.0)
                  + surface(rng, ki, ki_sp, 0.0, 0.6 * scale, 4.0))
    np.maximum(fat_bottom, skin + 1.0 * scale, out=fat_bottom)
    gland_bottom = fat_bottom + surface(rng, ki, ki_sp, rng.uniform(11.0, 20.0) * scale,
                                        1.8 * scale, 22.0)
    np.maximum(gland_bottom, fat_bottom + 4.0 * scale, out=gland_bottom)
    muscle_top = gland_bottom + surface(rng, ki, ki_sp, rng.uniform(2.0, 4.5) * scale,
                                        0.7 * scale, 12.0)
    np.maximum(muscle_top, gland_bottom + 0.8 * scale, out=muscle_top)
    muscle_bottom = muscle_top + surface(rng, ki, ki_sp, rng.uniform(5.0, 9.0) * scale,
                                         1.0 * scale, 20.0)
    np.maximum(muscle_bottom, muscle_top + 2.0 * scale, out=muscle_bottom)

    # Skin: moderately echogenic dermis between two bright specular lines.
    p.echo[:] = np.float32(SKIN[0])
    p.alpha[:] = np.float32(SKIN[1])
    p.line(np.full_like(skin, 0.35 * scale), SKIN_LINE_DB, 0.18 * scale + 0.3 * sj)

    # Subcutaneous fat, then gland, retromammary fat, muscle, chest wall: each painted from
    # its top surface to the deepest point where the next layer may still leave it visible.
    j0, j1 = p.texture_slab(float(skin.min()), float(fat_bottom.max()))
    p.layer(skin, j0, j1, _fat_texture(rng, p, j0, j1), FAT[1])
    p.line(skin, SKIN_LINE_DB - 3.0, 0.15 * scale + 0.3 * sj)
    j0, j1 = p.texture_slab(float(fat_bottom.min()), float(gland_bottom.max()))
    p.layer(fat_bottom, j0, j1, _gland_texture(rng, p, j0, j1), GLAND[1], edge_mm=0.5)
    j0, j1 = p.texture_slab(float(gland_bottom.min()), float(muscle_top.max()))
    p.layer(gland_bottom, j0, j1, affine(_noise(rng, p, j0, j1, (4.0, 2.0, 4.0)), 1.5, FAT[0]),
            FAT[1], edge_mm=0.6)
    p.line(gland_bottom + 0.3 * scale, FASCIA_DB - 2.0, 0.15 * scale + 0.3 * sj)
    j0, j1 = p.texture_slab(float(muscle_top.min()), float(muscle_bottom.max()))
    p.layer(muscle_top, j0, j1, _muscle_texture(rng, p, j0, j1, muscle_top), MUSCLE[1])
    p.line(muscle_top, FASCIA_DB, 0.2 * scale + 0.3 * sj)
    j0, j1 = p.texture_slab(float(muscle_bottom.min()), depth)
    p.layer(muscle_bottom, j0, j1, CHEST_WALL[0], CHEST_WALL[1], edge_mm=0.5)
    p.line(muscle_bottom, FASCIA_DB - 2.0, 0.2 * scale + 0.3 * sj)

    surfaces = dict(skin=skin, fat_bottom=fat_bottom, gland_bottom=gland_bottom,
                    muscle_top=muscle_top, muscle_bottom=muscle_bottom)
    want_ribs = bool(rng.random() < 0.5) if ribs is None else bool(ribs)
    has_ribs = want_ribs and _paint_ribs(rng, p, muscle_bottom, scale)
    return Anatomy(p.echo, p.alpha, surfaces, has_ribs)


def _noise(rng: np.random.Generator, p: _Painter, j0: int, j1: int, scale_mm: Floats) -> np.ndarray:
    shape = (p.shape[0], max(j1 - j0, 1), p.shape[2])
    return smooth_noise(rng, shape, p.spacing, scale_mm)


def _fat_texture(rng: np.random.Generator, p: _Painter, j0: int, j1: int) -> np.ndarray:
    """Fat lobules outlined by Cooper's ligaments: the zero set of a smooth random field.

    The zero level set of a band-limited field is a network of curved sheets that splits
    space into irregular cells: the look of ligaments wrapping fat lobules. Dividing the distance
    to the nearest level by the field's gradient gives sheets of uniform physical thickness
    instead of blobs.
    """
    g = _noise(rng, p, j0, j1, (6.0, 2.2, 5.0))
    grad = None                     # |∇g|, one axis at a time (each is a full slab)
    for axis, step in enumerate(p.spacing):
        part = _gradient(g, step, axis)
        part *= part
        if grad is None:
            grad = part
        else:
            grad += part
            del part
    assert grad is not None         # three axes
    np.sqrt(grad, out=grad)
    grad += np.float32(1e-3)
    d = np.abs(g, out=g)
    d /= grad
    del grad
    d /= np.float32(0.1 + 0.3 * p.spacing[1])      # sheet thickness
    np.square(d, out=d)
    lig = np.exp(np.negative(d, out=d), out=d)
    echo = affine(_noise(rng, p, j0, j1, (3.0, 1.5, 3.0)), 1.8, FAT[0])
    blend(echo, lig, LIGAMENT_DB)
    return echo


def _gradient(f: np.ndarray, step: float, axis: int) -> np.ndarray:
    """``np.gradient(f, step, axis=axis)`` (same values) without its two slab temporaries."""
    out = np.empty_like(f)
    src, dst = np.moveaxis(f, axis, 0), np.moveaxis(out, axis, 0)
    if src.shape[0] < 2:
        raise ValueError("a gradient needs at least 2 samples along the axis")
    np.subtract(src[2:], src[:-2], out=dst[1:-1])
    dst[1:-1] /= 2.0 * step
    np.subtract(src[1], src[0], out=dst[0])
    dst[0] /= step
    np.subtract(src[-1], src[-2], out=dst[-1])
    dst[-1] /= step
    return out


def _gland_texture(rng: np.random.Generator, p: _Painter, j0: int, j1: int) -> np.ndarray:
    """Fibroglandular tissue: bright, streaky parallel to the skin, with fat islands and ducts.

    The fat islands (hypoechoic, a few mm) and the ducts (dark tubes of 1-2 mm running
    towards the nipple, seen as small dark ovals or streaks) are the tissue's own lesion
    look-alikes; the per-volume island threshold makes some breasts dense, some fatty.
    Ducts are where two independent smooth fields are both near zero: a set of curves.
    """
    echo = affine(_noise(rng, p, j0, j1, (3.0, 0.8, 3.0)), 2.5, GLAND[0])   # streaks
    islands = _noise(rng, p, j0, j1, (5.0, 2.5, 5.0))
    islands -= np.float32(rng.uniform(0.9, 1.8))              # the breast's density
    islands *= np.float32(4.0)
    blend(echo, smoothstep(islands, out=islands), FAT[0] + 2.0)
    del islands
    if rng.random() < 0.7:
        along = (12.0, 3.0, 3.0) if rng.random() < 0.5 else (3.0, 3.0, 12.0)
        g1 = _noise(rng, p, j0, j1, along)
        g1 *= g1
        g2 = _noise(rng, p, j0, j1, along)
        g2 *= g2
        g1 += g2
        del g2
        np.negative(g1, out=g1)
        g1 /= np.float32(rng.uniform(0.01, 0.03))
        blend(echo, np.exp(g1, out=g1), -16.0)                 # ducts
    return echo


def _muscle_texture(rng: np.random.Generator, p: _Painter, j0: int, j1: int, muscle_top: np.ndarray) -> np.ndarray:
    """Pectoral muscle: dark bundles separated by thin bright, slightly oblique striations."""
    depth = p.depth_mm(j0, j1) - muscle_top
    x_i = (np.arange(p.shape[2], dtype=np.float32) * np.float32(p.spacing[2]))[None, None, :]
    tilt = np.float32(rng.uniform(-0.12, 0.12))
    period = np.float32(rng.uniform(1.0, 2.0))
    phase = _noise(rng, p, j0, j1, (12.0, 6.0, 12.0))
    phase *= np.float32(1.2)
    wave = depth                     # cos((depth + tilt·x)·2π/period + phase), in place
    wave += tilt * x_i
    wave *= np.float32(2 * np.pi)
    wave /= period
    wave += phase
    del phase
    np.cos(wave, out=wave)
    wave += 1.0
    wave *= 0.5
    stripes = np.power(wave, 4, out=wave)
    return affine(stripes, 12.0, MUSCLE[0])


def _paint_ribs(rng: np.random.Generator, p: _Painter, muscle_bottom: np.ndarray, scale: float) -> bool:
    """Ribs below the muscle: a bright curved cortex over bone that shadows everything deeper.

    Ribs run in a random direction in the (k, i) plane, 20-28 mm apart; each cross-section is
    a half-ellipse seen from above. Returns False when they would lie below the field of view.
    """
    K, J, I = p.shape
    sk, sj, si = p.spacing
    depth = J * sj
    half_w = rng.uniform(5.0, 7.0) * scale
    half_h = rng.uniform(3.0, 4.5) * scale
    centre = float(muscle_bottom.max()) + rng.uniform(0.5, 2.5) * scale + half_h
    if centre - half_h > depth - 1.0:
        return False
    theta = rng.uniform(0, np.pi)
    kk = np.arange(K, dtype=np.float32)[:, None] * np.float32(sk)
    ii = np.arange(I, dtype=np.float32)[None, :] * np.float32(si)
    across = kk * np.float32(np.cos(theta)) + ii * np.float32(np.sin(theta))
    pitch = rng.uniform(20.0, 28.0) * scale
    u = np.mod(across + rng.uniform(0, pitch), pitch) - pitch / 2   # distance to nearest rib
    inside = np.clip(1.0 - (u / half_w) ** 2, 0.0, None)
    top = np.where(inside > 0, centre - half_h * np.sqrt(inside), np.inf).astype(np.float32)
    top = np.maximum(top, muscle_bottom[:, 0, :] + 0.5)[:, None, :]
    if not np.isfinite(top).any():
        return False
    finite = top[np.isfinite(top)]
    j0, j1 = p.slab(float(finite.min()) - 1.0, depth)
    d = p.depth_mm(j0, j1) - np.where(np.isfinite(top), top, np.float32(1e6))
    # Pleura between ribs: a bright line at the depth of the ribs' underside.
    pleura = np.float32(centre + 0.2 * half_h)
    pl = np.exp(-((p.depth_mm(j0, j1) - pleura) / np.float32(0.25 + 0.3 * sj)) ** 2)
    pl = pl * (top > pleura + 0.5)
    echo, alpha = p.echo[:, j0:j1], p.alpha[:, j0:j1]
    echo += pl * (np.float32(FASCIA_DB + 2.0) - echo)
    cortex = np.exp(-(d / np.float32(0.35 + 0.3 * sj)) ** 2)
    echo += cortex * (np.float32(RIB_CORTEX_DB) - echo)
    bone = smoothstep(d / np.float32(0.4) - 1.0)
    alpha += bone * (np.float32(BONE_ALPHA) - alpha)
    echo += bone * (np.float32(-6.0) - echo)
    return True
