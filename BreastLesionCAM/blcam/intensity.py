"""The fixed intensity normalisation shared by export, training and detection.

Ultrasound scanners write very different grey ranges, so each volume is mapped by its own
robust range: its ``LOW``/``HIGH`` percentiles (on a strided subsample, cheap even for ABUS
volumes of 10^8 voxels) go to 0 and 255, clipped, stored as uint8. Patches, training and
whole-volume detection all use this one mapping, and the model metadata records it, so
a heatmap is computed on exactly the intensities the network was trained on.
"""

from __future__ import annotations

import numpy as np

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
PAD_VALUE = 0          # outside-the-volume voxels in a patch, in normalised units (black)
SUBSAMPLE_VOXELS = 2_000_000

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
    """The volume's ``LOW``/``HIGH`` percentile grey values (deterministic subsample)."""
    step = max(1, int(round((volume.size / SUBSAMPLE_VOXELS) ** (1 / 3))))
    sample = volume[::step, ::step, ::step]
    lo, hi = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map grey values through ``[lo, hi] → [0, 255]``, clipped and rounded."""
    scaled = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def normalise_volume(volume: np.ndarray) -> np.ndarray:
    """The whole volume in stored units (what detection feeds the network)."""
    lo, hi = robust_range(volume)
    return to_uint8(volume, lo, hi)


def network_input(stored: np.ndarray):
    """Stored uint8 (numpy or torch) to the network's float input scale."""
    return (stored / 255.0 - NORMALISATION["network_mean"]) / NORMALISATION["network_std"]
