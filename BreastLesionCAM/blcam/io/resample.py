"""Resampling between a volume's own grid and the model's grid, in slabs, in millimetres.

A network learns lesions at the scale its training voxels had. ABUS scanners write strongly
anisotropic voxels that differ between vendors (TDSC-ABUS 2023: about 0.2 × 0.073 × 0.476
mm), so a model trained in voxels sees another scanner's lesions at the wrong size. Export
therefore resamples every volume to one *training spacing*, and Detect resamples each input
to the model's spacing, maps it there, and resamples the heatmap back onto the input's exact
grid (size, spacing, origin, direction), so the overlay lines up in Slicer.

The model grid keeps the input's origin corner and direction (the same tissue, voxel axes
still along the scanner's axes), so physical points never move: a point's LPS coordinates
are the same on either grid, and only its continuous index changes. SimpleITK does the
interpolation (linear for images and heatmaps), slab by slab along k, so that a large
volume never needs more than one full-resolution float copy at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import SimpleITK as sitk

from ..axes import Floats, float3, int3
from ..errors import BlcamError
from .volume import Geometry

SAME_SPACING_RTOL = 1e-4          # spacings this close are one grid: no resampling at all
SLAB_VOXELS = 32 * 1024 * 1024    # output voxels per resampling slab (128 MB of float32)


def _positive_mm(values: Floats, what: str, axes: str) -> tuple[float, float, float]:
    """Three positive, finite millimetre values, or a clear error naming ``what``."""
    out = tuple(float(v) for v in values)
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise BlcamError(f"{what} must be three positive sizes in mm ({axes}), got {' '.join(map(str, values))}")
    return out


def check_spacing(spacing: Floats, what: str = "--spacing") -> tuple[float, float, float]:
    """A voxel size: three positive, finite millimetre values (``i, j, k``)."""
    return _positive_mm(spacing, what, "i j k")


def mm_to_voxels(size_mm_kji: Floats, spacing_ijk: Floats, what: str) -> tuple[int, int, int]:
    """A size in mm (``k, j, i``, as patches and crops are given) → voxels at ``spacing_ijk``
    (rounded, at least one)."""
    sizes = _positive_mm(size_mm_kji, what, "k j i")
    return int3(max(1, int(round(mm / sp))) for mm, sp in zip(sizes, reversed(tuple(spacing_ijk))))


def median_spacing(geometries: Iterable[Geometry]) -> tuple[float, float, float]:
    """The per-axis median voxel size (mm, ``i, j, k``) of a cohort's volumes: export's
    ``auto`` training spacing.

    nnU-Net's rule for a target spacing: the median is a voxel size most volumes already
    have, so a single-scanner cohort is not resampled at all (its patches are the native
    ones), while a mixed cohort meets in the middle instead of at one vendor's extreme.
    """
    spacings = np.asarray([g.spacing for g in geometries], float)
    if spacings.size == 0:
        raise BlcamError("no volumes to take a median spacing from")
    return check_spacing(np.median(spacings, axis=0), "the cohort's median spacing")


# Voxels this much coarser than the model's, along any axis, are worth a warning at Detect.
COARSER_WARNING = 1.25


def coarser_axes(native_ijk: Floats, model_ijk: Floats, factor: float = COARSER_WARNING) -> list[str]:
    """The axes (``"i"``, ``"j"``, ``"k"``) along which an input's voxels are more than ``factor``
    times the model's, with both sizes: ``["k 0.8 mm > 0.5 mm"]``.

    Why: interpolated up to the model's grid, such a volume is smoother along that axis than any
    training crop. Measured on the phantom (``bench/spacing_shift.py``), the demo model kept its
    candidates' positions on 0.8 mm slices but its volume AUC fell from 0.87 to 0.74. Finer
    voxels than the model's are averaged down, which the network handles (ABUS in-plane)."""
    return [f"{name} {n:g} mm > {m:g} mm" for name, n, m in zip("ijk", native_ijk, model_ijk)
            if float(n) > factor * float(m)]


def grid_at_spacing(geometry: Geometry, spacing: Floats) -> Geometry:
    """The grid with ``spacing`` (mm, ``i, j, k``) that covers ``geometry``'s field of view.

    Same direction, same outer corner of the field of view (the corner of voxel 0), and as
    many voxels as fit the extent (rounded, at least one), so a round trip lands on the
    original grid. A spacing equal to the volume's returns the volume's own grid.
    """
    spacing = check_spacing(spacing)
    if np.allclose(geometry.spacing, spacing, rtol=SAME_SPACING_RTOL, atol=0.0):
        return geometry
    old, new = np.asarray(geometry.spacing, float), np.asarray(spacing, float)
    size = int3(max(1, int(round(n * o / s))) for n, o, s in zip(geometry.size, old, new))
    direction = np.asarray(geometry.direction, float).reshape(3, 3)
    corner = np.asarray(geometry.origin, float) - direction @ (old / 2)
    origin = corner + direction @ (new / 2)
    return Geometry(size, float3(new), float3(origin), geometry.direction)


def _image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    return geometry.apply_to(sitk.GetImageFromArray(array, isVector=False))


def resample(array: np.ndarray, geometry: Geometry, target: Geometry, fill: float | None = None) -> np.ndarray:
    """``array`` (``(k, j, i)`` on ``geometry``) linearly resampled onto ``target``.

    Returns the input itself (no copy) when the grids are the same. Points of ``target``
    outside ``geometry``'s field of view get ``fill``; ``None``: the array's smallest finite
    value, the grey of padding once normalised (computed only when resampling). Integer volumes stay integer (rounded:
    B-mode grey levels are 8-bit, and patches cut from them stay a quarter the size of
    float ones); anything else becomes float32. The output is built slab by slab
    (:data:`SLAB_VOXELS`), so the working set beyond the output is one slab.
    """
    if target == geometry:
        return array
    if tuple(array.shape) != geometry.shape:
        raise ValueError(f"array shape {array.shape} does not match its geometry {geometry.shape}")
    if fill is None:
        fill = float(np.nanmin(array))
    source = _image(np.ascontiguousarray(array), geometry)
    integer = np.issubdtype(array.dtype, np.integer)
    out = np.empty(target.shape, array.dtype if integer else np.float32)
    nk = target.shape[0]
    per_slice = int(np.prod(target.shape[1:]))
    step = max(1, SLAB_VOXELS // max(per_slice, 1))
    direction = np.asarray(target.direction, float).reshape(3, 3)
    f = sitk.ResampleImageFilter()
    f.SetInterpolator(sitk.sitkLinear)
    f.SetDefaultPixelValue(float(fill))
    f.SetOutputPixelType(sitk.sitkFloat32)
    f.SetOutputDirection(target.direction)
    f.SetOutputSpacing(target.spacing)
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        origin = np.asarray(target.origin, float) + direction[:, 2] * target.spacing[2] * k0
        f.SetOutputOrigin(tuple(float(v) for v in origin))
        f.SetSize((target.size[0], target.size[1], k1 - k0))
        image = f.Execute(source)                  # held: the view below reads its buffer
        slab = sitk.GetArrayViewFromImage(image)
        if integer:
            info = np.iinfo(array.dtype)
            slab = np.clip(np.rint(slab), info.min, info.max)
        out[k0:k1] = slab
    return out
