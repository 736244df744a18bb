"""Cutting a fixed-size box out of a volume, padding whatever falls outside it.

Convention (shared by export, training crops and detection): a box of size ``n`` centred on
voxel ``c`` covers ``[c - n // 2, c - n // 2 + n)``, so the centre voxel sits at index
``n // 2`` inside the box. A continuous centre is rounded to the nearest voxel, which keeps
the box's centre within half a voxel of the annotated physical point.
"""

from __future__ import annotations

import numpy as np

from ..axes import Floats, Ints


def box_start(center_index: Floats, size: Ints) -> np.ndarray:
    """First voxel of the box of ``size`` centred on the (rounded) ``center_index``."""
    center = np.floor(np.asarray(center_index, float) + 0.5).astype(int)
    return center - np.asarray(size, int) // 2


def inside_part(start: Ints, size: Ints, shape: Ints) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: the part of the box ``[start, start + size)`` that lies inside a volume of
    ``shape``, in box voxels (``hi == lo`` along an axis the box misses); the rest is padding."""
    start, size = np.asarray(start, int), np.asarray(size, int)
    return np.clip(-start, 0, size), np.clip(np.asarray(shape, int) - start, 0, size)


def padded_fraction(start: Ints, size: Ints, shape: Ints) -> float:
    """Share of the box's voxels that fall outside the volume."""
    lo, hi = inside_part(start, size, shape)
    return 1.0 - float(np.prod(hi - lo)) / float(np.prod(size))


def extract_box(volume: np.ndarray, start: Ints, size: Ints, pad_value: float = 0) -> tuple[np.ndarray, float]:
    """Copy ``volume[start:start+size]`` with out-of-volume voxels set to ``pad_value``.

    Returns the box and the fraction of its voxels that were padded.
    """
    start = np.asarray(start, int)
    lo, hi = inside_part(start, size, volume.shape)
    out = np.full(tuple(int(n) for n in size), pad_value, dtype=volume.dtype)
    inside = tuple(slice(a + s, b + s) for a, b, s in zip(lo, hi, start))
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = volume[inside]
    return out, padded_fraction(start, size, volume.shape)


def centre_range(shape: Ints, size: Ints) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest box centre (inclusive, per axis) that keep the box inside the volume
    where it fits; along an axis where it does not, the volume's centre."""
    shape = np.asarray(shape, int)
    size = np.asarray(size, int)
    lo = np.where(shape >= size, size // 2, shape // 2)
    hi = np.where(shape >= size, shape - (size - size // 2), shape // 2)
    return lo, hi


def random_centres(shape: Ints, size: Ints, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random box centres (``(k, j, i)``) keeping the box inside the volume where it fits."""
    lo, hi = centre_range(shape, size)
    return np.stack([rng.integers(a, b + 1, size=count) for a, b in zip(lo, hi)], axis=1)
