"""One phantom volume: anatomy, mimics and lesions placed in it, then image formation.

This is the Python entry point other parts of the project use to make test data:
``make_volume(rng, (24, 96, 96))`` returns a small volume, its label mask and its lesions
in a fraction of a second; the cohort writer calls :func:`simulate_volume` for the details
(mimics, envelope) as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..axes import Floats, Ints, float3
from ..errors import BlcamError
from .anatomy import build_anatomy
from .lesions import BIRADS, KINDS, MAX_DIAMETER_MM, MIMICS, MIN_DIAMETER_MM, Lesion, paint, sample_semi_axes
from .shapes import Ellipsoid
from .speckle import Transducer, attenuated_power, bmode_from_power

DEFAULT_SHAPE = (48, 320, 320)
DEFAULT_SPACING = (1.0, 0.15, 0.2)   # mm, (k elevation, j depth along the beam, i lateral)
KIND_WEIGHTS = {"irregular": 0.4, "oval": 0.35, "cyst": 0.25}


@dataclass
class LesionSpec:
    """A requested lesion: its kind, and optionally its diameter (mm) and centre (k, j, i)."""

    kind: str
    diameter_mm: float | None = None
    center_kji: tuple | None = None


@dataclass
class PhantomVolume:
    """Everything :func:`simulate_volume` knows about the volume it made."""

    image: np.ndarray                     # uint8 (k, j, i), log-compressed B-mode
    mask: np.ndarray                      # uint8 label map, lesion n = n
    lesions: list = field(default_factory=list)
    mimics: list = field(default_factory=list)
    envelope: np.ndarray | None = None    # linear envelope after TGC (if asked for)
    has_ribs: bool = False
    surfaces: dict = field(default_factory=dict)


def make_volume(rng: np.random.Generator, shape: Ints = DEFAULT_SHAPE, spacing: Floats = DEFAULT_SPACING,
                lesions: int | Sequence[str | LesionSpec] = 0, hard_negatives: int | None = None,
                ribs: bool | None = None, transducer: Transducer = Transducer()):
    """Simulate one ABUS volume; returns ``(image uint8, mask uint8, [Lesion, ...])``.

    ``lesions``: a count (kinds drawn at random), or a sequence of kind names
    (``"irregular"``, ``"oval"``, ``"cyst"``) or :class:`LesionSpec`. ``hard_negatives``:
    number of mimics (fat lobules, mass-less shadows); ``None`` draws 2-5 for a healthy
    volume and 0-2 for a lesion volume. ``ribs``: force the rib level on/off.
    """
    vol = simulate_volume(rng, shape, spacing, lesions, hard_negatives, ribs, transducer)
    return vol.image, vol.mask, vol.lesions


def simulate_volume(rng: np.random.Generator, shape: Ints = DEFAULT_SHAPE, spacing: Floats = DEFAULT_SPACING,
                    lesions: int | Sequence[str | LesionSpec] = 0, hard_negatives: int | None = None,
                    ribs: bool | None = None, transducer: Transducer = Transducer(),
                    return_envelope: bool = False) -> PhantomVolume:
    """Like :func:`make_volume`, returning a :class:`PhantomVolume` with mimics and extras."""
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    anatomy = build_anatomy(rng, shape, spacing, ribs)
    specs = _specs(rng, lesions)
    if hard_negatives is None:
        hard_negatives = int(rng.integers(0, 3)) if specs else int(rng.integers(2, 6))
    placed: list[Lesion] = []
    for spec in specs:
        try:
            lesion = _place(rng, spec.kind, spec.diameter_mm, spec.center_kji, shape, spacing,
                            anatomy.surfaces, placed)
        except _NoRoom:
            # A drawn (not requested) extra lesion may not fit a small volume: skip it.
            if not placed or not isinstance(lesions, (int, np.integer)):
                raise
            continue
        lesion.id = len(placed) + 1
        lesion.birads = BIRADS[spec.kind] + (spec.kind == "irregular" and lesion.diameter_mm >= 12)
        placed.append(lesion)
    mimics: list[Lesion] = []
    for _ in range(hard_negatives):
        kind = MIMICS[0] if rng.random() < 0.6 else MIMICS[1]
        try:
            mimics.append(_place(rng, kind, None, None, shape, spacing, anatomy.surfaces,
                                 placed + mimics))
        except _NoRoom:
            pass
    mask = np.zeros(shape, np.uint8)
    for mimic in mimics:             # mimics first: a lesion drawn later stays intact
        paint(rng, mimic, anatomy.echo_db, anatomy.alpha, None, spacing)
    for lesion in placed:
        paint(rng, lesion, anatomy.echo_db, anatomy.alpha, mask, spacing)
    gain = float(rng.normal(0.0, 1.5))   # operator gain varies a little between scans
    power = attenuated_power(anatomy.echo_db, anatomy.alpha, spacing, transducer)
    anatomy.echo_db = anatomy.alpha = None  # type: ignore[assignment]  # free 2 volumes before the speckle buffers
    out = bmode_from_power(rng, power, spacing, transducer, gain, return_envelope)
    image, env = out if return_envelope else (out, None)
    return PhantomVolume(image, mask, placed, mimics, env, anatomy.has_ribs, anatomy.surfaces)


def _specs(rng: np.random.Generator, lesions: int | Sequence[str | LesionSpec] | None) -> list[LesionSpec]:
    if isinstance(lesions, (int, np.integer)):
        kinds = list(KIND_WEIGHTS)
        p = np.asarray(list(KIND_WEIGHTS.values()))
        return [LesionSpec(str(rng.choice(kinds, p=p / p.sum()))) for _ in range(int(lesions))]
    specs = []
    for item in lesions or ():
        spec = LesionSpec(item) if isinstance(item, str) else item
        if spec.kind not in KINDS:
            raise ValueError(f"unknown lesion kind {spec.kind!r}; use one of {KINDS}")
        specs.append(spec)
    return specs


class _NoRoom(BlcamError):
    """A lesion does not fit the requested volume (too small or too crowded)."""


def _max_diameter(shape: Ints, spacing: Floats) -> float:
    """Largest lesion that fits the field of view with room around (and below) it."""
    extent = np.asarray(shape) * np.asarray(spacing)
    return float(min(MAX_DIAMETER_MM, 0.6 * extent[0], 0.45 * extent[1], 0.6 * extent[2]))


def _place(rng: np.random.Generator, kind: str, diameter: float | None, center: Floats | None, shape: Ints,
           spacing: Floats, surfaces: dict[str, np.ndarray], others: list[Lesion]) -> Lesion:
    """Choose a size and a centre: inside the volume, in the fat/gland zone, apart from
    ``others``, and with tissue below it (where its shadow or enhancement must show)."""
    d_max = _max_diameter(shape, spacing)
    if diameter is None:
        lo = min(MIN_DIAMETER_MM, d_max)
        hi = d_max if kind in KINDS else min(15.0 if kind == "fat_lobule" else 9.0, d_max)
        diameter = float(np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo)))))
    sp = np.asarray(spacing, float)
    for attempt in range(60):
        size = float(diameter) * (0.85 ** (attempt // 15))
        semi = sample_semi_axes(rng, kind, size)
        theta = float(rng.uniform(0.0, np.pi))
        if kind == "shadow":
            theta = float(rng.choice([0.0, np.pi / 2]) + rng.normal(0.0, 0.2))
        lesion = Lesion(kind, round(size, 3), Ellipsoid((0.0, 0.0, 0.0), semi, theta))
        half = lesion.footprint_mm() / sp + 1.0           # voxels
        c = center if center is not None else _draw_centre(rng, kind, half, shape, sp, surfaces)
        if c is None:
            continue
        lesion.ellipsoid = Ellipsoid(float3(c), semi, theta)
        if center is not None or _apart(lesion, others, sp):
            return lesion
    raise _NoRoom(f"a lesion ({kind}) does not fit a volume of {' x '.join(map(str, shape))} "
                  f"voxels of {' x '.join(f'{s:g}' for s in spacing)} mm (k j i); use a "
                  "larger --shape or --spacing, or --lesion-fraction 0")


def _draw_centre(rng: np.random.Generator, kind: str, half: np.ndarray, shape: Ints, sp: np.ndarray,
                 surfaces: dict[str, np.ndarray]) -> tuple[float, float, float] | None:
    lo_k, hi_k = half[0], shape[0] - 1 - half[0]
    lo_i, hi_i = half[2], shape[2] - 1 - half[2]
    if hi_k < lo_k or hi_i < lo_i:
        return None
    k = rng.uniform(lo_k, hi_k)
    i = rng.uniform(lo_i, hi_i)
    ks, is_ = int(round(k)), int(round(i))
    top = float(surfaces["fat_bottom"][ks, 0, is_]) / sp[1]
    bottom = float(surfaces["gland_bottom"][ks, 0, is_]) / sp[1]
    skin = float(surfaces["skin"][ks, 0, is_]) / sp[1]
    if kind == "shadow":       # ligament shadows start at the gland's upper surface
        lo_j, hi_j = top - half[1], top + 2 * half[1]
    else:                      # mostly in the gland, sometimes bulging into the fat
        lo_j, hi_j = top + 0.7 * half[1], bottom - 0.3 * half[1]
    room_below = 0.12 * shape[1]       # keep some tissue below for shadow / enhancement
    lo_j = max(lo_j, skin + half[1] + 1.0)
    hi_j = min(hi_j, shape[1] - 1 - half[1] - room_below)
    if hi_j < lo_j:
        lo_j, hi_j = skin + half[1] + 1.0, shape[1] - 1 - half[1] - room_below
        if hi_j < lo_j:
            return None
    return (k, rng.uniform(lo_j, hi_j), i)


def _apart(lesion: Lesion, others: list[Lesion], sp: np.ndarray) -> bool:
    c = np.asarray(lesion.center_kji) * sp
    r = np.max(lesion.footprint_mm())
    for other in others:
        gap = np.linalg.norm(c - np.asarray(other.center_kji) * sp)
        if gap < r + np.max(other.footprint_mm()) + 1.0:
            return False
    return True
