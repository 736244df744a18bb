"""The fixed intensity normalisation shared by export, training and detection.

Ultrasound scanners write very different grey ranges, so each volume is mapped by its own
robust range: its ``LOW``/``HIGH`` percentiles (on a strided subsample, cheap even for ABUS
volumes of 10^8 voxels) go to 0 and 255, clipped, as uint8. Patches (on reading), training and
whole-volume detection all use this one mapping, and the model metadata records it, so
a heatmap is computed on exactly the intensities the network was trained on.

Float volumes may hold NaN or ±inf voxels (failed reconstructions, masked exports). The
range comes from the finite voxels only (one NaN would otherwise make it ``nan, nan`` and
every patch black), non-finite voxels map to 0 like padding, and callers report how many
there were (:func:`count_non_finite`); a volume without any finite voxel is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .axes import PathLike
from .errors import BlcamError

if TYPE_CHECKING:
    import torch

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
PAD_VALUE = 0          # outside-the-volume voxels in a patch, in normalised units (black)
SUBSAMPLE_VOXELS = 1_000_000
NETWORK_MEAN = 0.5     # network input = (stored / 255 - MEAN) / STD
NETWORK_STD = 0.25
# The stored value nearest the network's zero input: what its convolutions pad a volume's faces
# with, and what Detect shows where a volume holds no image (NaN voxels; io/padding.py).
NEUTRAL_STORED = int(round(NETWORK_MEAN * 255))

NORMALISATION = {
    "method": "volume_percentile_uint8",
    "low_percentile": LOW_PERCENTILE,
    "high_percentile": HIGH_PERCENTILE,
    "stored_dtype": "uint8",
    "pad_value": PAD_VALUE,
    "network_mean": NETWORK_MEAN,
    "network_std": NETWORK_STD,
}

# Numpy arrays stay numpy arrays and tensors tensors (network_input).
_Array = TypeVar("_Array", np.ndarray, "torch.Tensor")


def robust_range(volume: np.ndarray, source: PathLike = "volume") -> tuple[float, float]:
    """The volume's ``LOW``/``HIGH`` percentile grey values, from a strided subsample of
    about ``SUBSAMPLE_VOXELS`` voxels (deterministic; ABUS volumes hold 10^8 voxels).

    Integer volumes of up to 16 bits (all B-mode data we know of) use a histogram, the
    fastest exact percentile; other types ``np.percentile`` over the finite voxels
    (``source`` names the volume if it has none).
    """
    step = max(1, int(np.ceil((volume.size / SUBSAMPLE_VOXELS) ** (1 / 3))))
    sample = volume[::step, ::step, ::step]
    if _small_int(volume.dtype):
        info = np.iinfo(volume.dtype)
        flat = sample.ravel()
        counts = np.bincount(flat.astype(np.int64) - info.min if info.min else flat)
        cdf = np.cumsum(counts) / flat.size
        lo = float(np.searchsorted(cdf, LOW_PERCENTILE / 100.0) + info.min)
        hi = float(np.searchsorted(cdf, HIGH_PERCENTILE / 100.0) + info.min)
    else:
        lo, hi = (float(v) for v in np.percentile(_finite(sample, volume, source), [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _finite(sample: np.ndarray, volume: np.ndarray, source: PathLike) -> np.ndarray:
    """The finite values of ``sample``; of the whole volume if the subsample has none (a
    few finite voxels between the strides); an error if the volume has none at all."""
    if not np.issubdtype(sample.dtype, np.floating):
        return sample
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        raise BlcamError(f"{source}: all {volume.size} voxels are NaN or infinite; no grey range to normalise by")
    return finite


def count_non_finite(volume: np.ndarray) -> int:
    """NaN and ±inf voxels, counted slice by slice (no volume-sized temporary)."""
    if not np.issubdtype(volume.dtype, np.floating):
        return 0
    return int(sum(np.count_nonzero(~np.isfinite(plane)) for plane in volume))


def non_finite_warning(source: PathLike, count: int, total: int,
                       fate: str = "the others are set to the low end (0)") -> str:
    """The one-line warning export and detect print for a volume with non-finite voxels;
    ``fate`` says what becomes of them (Detect treats them as nothing imaged)."""
    return (f"warning: {source}: {count} of {total} voxels are NaN or infinite; the grey range uses the "
            f"finite voxels and {fate}")


def to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map grey values through ``[lo, hi] → [0, 255]``, clipped and rounded.

    Small integer types go through a lookup table (one gather per voxel instead of float maths).
    """
    if _small_int(values.dtype):
        info = np.iinfo(values.dtype)
        lut = _scale(np.arange(info.min, info.max + 1, dtype=np.float64), lo, hi)
        return lut[values.astype(np.int64) - info.min] if info.min else lut[values]
    return _scale(values, lo, hi)


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Float maths; NaN and ±inf voxels become 0 (a cast of NaN to uint8 is undefined)."""
    scaled = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    out = np.clip(np.rint(scaled), 0, 255)
    if np.issubdtype(values.dtype, np.floating):
        out[~np.isfinite(values)] = 0
    return out.astype(np.uint8)


def _small_int(dtype: np.dtype | type) -> bool:
    return np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize <= 2


def normalise_volume(volume: np.ndarray, source: PathLike = "volume") -> np.ndarray:
    """The whole volume in stored units (what detection feeds the network)."""
    lo, hi = robust_range(volume, source)
    return to_uint8(volume, lo, hi)


def network_input(stored: _Array) -> _Array:
    """Stored uint8 (numpy or torch) to the network's float input scale."""
    return (stored / 255.0 - NETWORK_MEAN) / NETWORK_STD
