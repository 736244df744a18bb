"""Random appearance changes: a model that does not depend on one scanner's texture and grey curve.

Why: a model learns the speckle grain and grey curve of the volumes it was trained on, and
both change with the scanner, its settings and the voxel size (a volume acquired with 0.8 mm
slices and resampled to the model's 0.5 mm has a smoother texture along the slices than any
training crop). Measured on the phantom (``bench/RESULTS.md``), the bundled model kept its
pointing game on such volumes but its volume AUC fell from 0.87 to 0.74: healthy tissue of
an unfamiliar texture scored higher. The paper augments with flips only; nnU-Net's standard
intensity augmentations (Isensee et al. 2021) address exactly this, and this module applies
four of them, each to a draw with probability ``p`` and with nnU-Net's ranges:

* **blur**: a Gaussian of width 0.5–1 voxel, per axis;
* **low resolution**: down-sampled by 1–2× per axis (nearest) and back (trilinear), as a
  coarser acquisition resampled to the model's grid looks;
* **contrast**: the grey values scaled by 0.75–1.25 about the crop's mean;
* **gamma**: ``255 (x / 255)^γ`` with γ log-uniform in 0.7–1.5.

Grey values stay in [0, 255] (the stored range, before :func:`blcam.intensity.network_input`).
The parameters come from a random stream of their own per (seed, epoch, patch, repeat), so
crops, flips and zoom factors do not change with it. Geometry is untouched, so the point
targets stay valid. Evaluation and Detect see the volumes as they are.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..axes import Ints
from .data import STREAM_APPEARANCE, draw_rngs

BLUR_SIGMA = (0.5, 1.0)        # voxels
LOW_RES_FACTOR = (1.0, 2.0)    # down-sampling factor per axis
CONTRAST = (0.75, 1.25)
GAMMA = (0.7, 1.5)
# Columns of the parameter table: 3 blur widths, 3 down-sampling factors, contrast, gamma
# (0 / 1 / 1 / 1 mean "not applied").
COLUMNS = 8


def random_appearance(seed: int, epoch: int, indices: Ints, p: float, repeats: Ints | None = None) -> np.ndarray:
    """``(n, 8)`` parameters per draw: blur σ (k, j, i; 0 = none), down-sampling factors
    (k, j, i; 1 = none), contrast factor and gamma (1 = none), each change drawn with
    probability ``p`` (:mod:`.data.draw_rngs`: reproducible, a stream of its own)."""
    out = np.zeros((len(indices), COLUMNS), np.float64)
    out[:, 3:] = 1.0
    for row, _, rng in draw_rngs(seed, STREAM_APPEARANCE, epoch, indices, repeats):
        applied = rng.random(4) < p
        values = (rng.uniform(*BLUR_SIGMA, 3), rng.uniform(*LOW_RES_FACTOR, 3),
                  rng.uniform(*CONTRAST), math.exp(rng.uniform(math.log(GAMMA[0]), math.log(GAMMA[1]))))
        if applied[0]:
            out[row, 0:3] = values[0]
        if applied[1]:
            out[row, 3:6] = values[1]
        if applied[2]:
            out[row, 6] = values[2]
        if applied[3]:
            out[row, 7] = values[3]
    return out


def _blur_axis(x: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """``(1, 1, k, j, i)`` smoothed along ``axis`` (0–2) by a normalised Gaussian of width
    ``sigma`` voxels, edges replicated (no dark border from zero padding)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = len(t)
    pad = [0, 0, 0, 0, 0, 0]
    pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius        # F.pad lists the last axis first
    return F.conv3d(F.pad(x, pad, mode="replicate"), (kernel / kernel.sum()).reshape(shape))


def change_appearance(crop: torch.Tensor, params: np.ndarray) -> torch.Tensor:
    """One ``(k, j, i)`` crop (grey values 0–255, any dtype) → float, changed as ``params``
    (one row of :func:`random_appearance`) says."""
    x = crop.float()[None, None]
    for axis in range(3):
        if params[axis] > 0:
            x = _blur_axis(x, float(params[axis]), axis)
    size = x.shape[2:]
    if np.any(params[3:6] > 1.0):
        low = [max(1, int(round(n / f))) for n, f in zip(size, params[3:6])]
        x = F.interpolate(F.interpolate(x, size=low, mode="nearest"), size=size, mode="trilinear",
                          align_corners=False)
    if params[6] != 1.0:
        mean = x.mean()
        x = (x - mean) * float(params[6]) + mean
    x = x.clamp(0.0, 255.0)
    if params[7] != 1.0:
        x = 255.0 * (x / 255.0) ** float(params[7])
    return x[0, 0]


def with_appearance(crops: torch.Tensor, params: np.ndarray | None, drawn: slice | Ints) -> torch.Tensor:
    """The training loop's hook: ``crops`` unchanged without the option, else each crop of
    this batch changed by its draw's row (``drawn``) of the epoch's parameters."""
    if params is None:
        return crops
    rows = params[drawn]
    return torch.stack([change_appearance(c, r) for c, r in zip(crops, rows)])
