"""Smooth random fields: the raw material of every boundary and texture in the phantom.

Anatomy is not drawn with primitives but grown from band-limited noise, because real tissue
boundaries (the gland surface, fat lobules, Cooper's ligaments) are irregular at every
scale, and a CNN trained on perfectly regular shapes learns to spot the regularity instead
of the lesion. Fields are generated on a coarse grid (a few points per correlation length)
and upsampled by separable linear interpolation, which is an order of magnitude cheaper
than ``scipy.ndimage.zoom`` on a full 48×320×320 volume and keeps the per-volume budget.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..axes import Floats, Ints

CHUNK_ELEMENTS = 1 << 22   # 16 MB of float32: interpolation temporaries stay this small


def upsample_linear(low: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize ``low`` to ``shape`` by separable linear interpolation (corners aligned).

    Axes are processed from the one that grows least to the one that grows most, so the
    intermediate arrays stay small and only the last step touches the full output.
    """
    out = np.asarray(low, np.float32)
    order = sorted(range(out.ndim), key=lambda a: shape[a] / max(out.shape[a], 1))
    for axis in order:
        n_in, n_out = out.shape[axis], shape[axis]
        if n_in == n_out:
            continue
        if n_in == 1:
            out = np.repeat(out, n_out, axis=axis)
            continue
        out = _interpolate_axis(out, axis, n_out)
    return out


def _interpolate_axis(src: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Linear resize of ``src`` along ``axis``, written chunk by chunk into the result.

    Each output value is ``a + (b - a)·w`` of its two neighbours, whatever the chunking, so
    the result is the same as one whole-array step; doing it in chunks along another axis
    keeps the two neighbour arrays small instead of two extra full-size copies, which
    matters at ABUS size (a 0.8 GB float32 field would briefly need 2.4 GB).
    """
    n_in = src.shape[axis]
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.minimum(pos.astype(np.intp), n_in - 2)
    bshape = [1] * src.ndim
    bshape[axis] = n_out
    w = (pos - i0).astype(np.float32).reshape(bshape)
    shape = list(src.shape)
    shape[axis] = n_out
    result = np.empty(shape, np.float32)
    if src.ndim == 1:
        chunks = [(slice(None),)]
    else:
        along = 1 if axis == 0 else 0
        step = max(1, CHUNK_ELEMENTS * shape[along] // max(result.size, 1))
        chunks = [(slice(None),) * along + (slice(c0, c0 + step),)
                  for c0 in range(0, shape[along], step)]
    for part in chunks:
        a = np.take(src[part], i0, axis=axis)
        b = np.take(src[part], i0 + 1, axis=axis)
        b -= a
        b *= w
        a += b
        result[part] = a
    return result


def smooth_noise(rng: np.random.Generator, shape: Ints, spacing: Floats, scale_mm: float | Floats,
                 extent_pad: float = 1.0
                 ) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``scale_mm``.

    ``shape`` and ``spacing`` describe the target grid (any dimensionality); ``scale_mm`` is
    a scalar or one value per axis, so fields can be stretched (e.g. ligaments that run
    mostly parallel to the skin). The coarse grid has ~2 points per correlation length,
    smoothed by one grid cell, which removes the grid's own anisotropy.
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.broadcast_to(np.asarray(spacing, float), (len(shape),))
    scale = np.broadcast_to(np.asarray(scale_mm, float), (len(shape),))
    extent = np.asarray(shape) * spacing
    n_low = np.maximum(2, np.ceil(extent / (0.5 * scale) * extent_pad).astype(int) + 3)
    n_low = np.minimum(n_low, np.asarray(shape) + 2)
    low = rng.standard_normal(tuple(n_low)).astype(np.float32)
    low = ndi.gaussian_filter(low, 1.0, mode="wrap")
    std = float(low.std())
    low /= std if std > 0 else 1.0
    # Crop one cell at each end so the result does not show the wrap-around seam.
    sl = tuple(slice(1, n - 1) if n > 3 else slice(None) for n in n_low)
    return upsample_linear(low[sl], shape)


def surface(rng: np.random.Generator, shape_ki: Ints, spacing_ki: Floats, mean_mm: float, amp_mm: float,
            scale_mm: float) -> np.ndarray:
    """A random depth surface over ``(k, i)``: ``mean_mm + amp_mm · noise``, shape (K, 1, I).

    The singleton middle axis lets it broadcast against depth ``(1, J, 1)`` directly.
    """
    field = smooth_noise(rng, shape_ki, spacing_ki, scale_mm)
    return (mean_mm + amp_mm * field).astype(np.float32)[:, None, :]


def smoothstep(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """0 below -0.5, 1 above +0.5, linear between: a partial-volume edge of unit width.

    ``out`` (may be ``x`` itself) receives the result instead of a new array, with the same
    values: the anatomy calls it on slabs of up to half an ABUS volume.
    """
    if out is None:
        return np.clip(x + 0.5, 0.0, 1.0)
    np.add(x, 0.5, out=out)
    return np.clip(out, 0.0, 1.0, out=out)


def blend(arr: np.ndarray, w: np.ndarray, value: float | np.ndarray) -> None:
    """``arr += w · (value − arr)`` in place, with one temporary instead of two.

    ``value`` is a scalar or an array of ``arr``'s shape; an array value is overwritten (its
    buffer is the temporary), so pass only arrays that are not needed afterwards. The
    rounding is that of the plain expression: the same float32 operations in the same order
    (products commute exactly), so the phantom's output does not change.
    """
    if not isinstance(value, np.ndarray) or value.ndim == 0:
        diff = np.float32(value) - arr
    else:
        diff = np.subtract(value, arr, out=value)
    diff *= w
    arr += diff


def affine(a: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``offset + scale · a`` computed in ``a``'s own buffer (same values as the expression)."""
    a *= scale
    a += offset
    return a
