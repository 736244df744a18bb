"""The fixed intensity normalisation shared by export, training and detection.

Ultrasound scanners write very different grey ranges, so each volume is mapped by its own
robust range: its ``LOW``/``HIGH`` percentiles (on a strided subsample, cheap even for ABUS
volumes of 10^8 voxels) go to 0 and 255, clipped, as uint8. Patches (on reading), training and
whole-volume detection all use this one mapping, and the model metadata records it, so
a heatmap is computed on exactly the intensities the network was trained on.
"""

from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
PAD_VALUE = 0          # outside-the-volume voxels in a patch, in normalised units (black)
SUBSAMPLE_VOXELS = 1_000_000

NORMALISATION = {
    "method": "volume_percentile_uint8",
    "low_percentile": LOW_PERCENTILE,
    "high_percentile": HIGH_PERCENTILE,
    "stored_dtype": "uint8",
    "pad_value": PAD_VALUE,
    # Network input = (stored / 255 - MEAN) / STD
    "network_mean": 0.5,
    "network_std": 0.25,
}


def robust_range(volume: np.ndarray) -> tuple[float, float]:
    """The volume's ``LOW``/``HIGH`` percentile grey values, from a strided subsample of
    about ``SUBSAMPLE_VOXELS`` voxels (deterministic; ABUS volumes hold 10^8 voxels).

    Integer volumes of up to 16 bits (all B-mode data we know of) use a histogram, the
    fastest exact percentile; other types ``np.percentile``.
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
        lo, hi = (float(v) for v in np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


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
    scaled = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _small_int(dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize <= 2


def normalise_volume(volume: np.ndarray) -> np.ndarray:
    """The whole volume in stored units (what detection feeds the network)."""
    lo, hi = robust_range(volume)
    return to_uint8(volume, lo, hi)


def network_input(stored: np.ndarray):
    """Stored uint8 (numpy or torch) to the network's float input scale."""
    return (stored / 255.0 - NORMALISATION["network_mean"]) / NORMALISATION["network_std"]
