"""Point supervision: teach the lesion map itself to point at the clicked centre.

The paper trains the patch classifier only (BCE on the crop's logit) and reads the
location off Grad-CAM afterwards. Nothing then asks the *map* to peak on the lesion: any
feature voxel of a positive crop may carry the evidence, and on held-out volumes the
hottest candidate lay in the lesion for one lesion in four (``bench/RESULTS.md``).

But the click says where the lesion is in every positive crop: the patch is centred on it,
and the crop's offset and flips are known. With global average pooling and one linear unit,
the crop logit is the mean of the *local logits* ``w · a(f) + b`` over the last block's
feature voxels ``f`` (:mod:`blcam.cam.maps`), so those local logits can be supervised
directly: a soft target ``exp(-|x_f - c|² / 2σ²)`` at each feature voxel's receptive-field
centre ``x_f`` for the lesion centre ``c``, zero everywhere in negative crops, BCE per
voxel. The classification loss stays as it was (Table 2 is still the crop classifier); the
point loss is added with weight ``point_loss``. Because the targets fall off smoothly with
distance, the logits of neighbouring voxels encode where between them the lesion lies,
which the candidate finder's parabola refinement reads back (sub-voxel peaks on a grid
whose spacing is the network's stride).

Where a feature voxel sits: at ``stride · f`` along an axis with several feature voxels
(the receptive-field centre, :func:`blcam.cam.maps.feature_offset`), and at the crop's
centre ``(n - 1) / 2`` along an axis where the crop has one (a 16-slice crop at stride 16:
that voxel sees the whole crop, and slab-mode Detect places each slab's row at its
centre slice, :class:`blcam.cam.dense.DenseLesionMapper`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..axes import Float3, float3
from ..cam.local_logits import feature_positions


def lesion_in_crop(patch: Sequence[int], crop: Sequence[int] | np.ndarray, offsets: np.ndarray,
                   flips: np.ndarray) -> np.ndarray:
    """``(B, 3)``: where the patch-centre voxel (the lesion centre) lies in each crop.

    ``flips`` are along k and i (:func:`blcam.training.data.crop_array`): a flipped axis maps
    position ``p`` to ``n - 1 - p``.
    """
    pos = (np.asarray(patch, int) // 2)[None, :] - np.asarray(offsets, int)
    pos = pos.astype(np.float64)
    crop = np.asarray(crop, int)
    for col, axis in ((0, 0), (1, 2)):
        flipped = np.asarray(flips, bool)[:, col]
        pos[flipped, axis] = crop[axis] - 1 - pos[flipped, axis]
    return pos


def point_targets(positions: np.ndarray, labels: np.ndarray, crop: Sequence[int], stride: Sequence[int],
                  sigma: float | Sequence[float] | np.ndarray) -> torch.Tensor:
    """Soft targets ``(B, *feature grid)``: a Gaussian of width ``sigma`` (voxels, per axis)
    around the lesion centre for positive crops, zero for negative ones."""
    axes = feature_positions(crop, stride)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (3,))
    out = np.ones((len(positions), *(len(a) for a in axes)), np.float32)
    for axis, cells in enumerate(axes):
        d = (cells[None, :] - positions[:, axis:axis + 1]) / sigma[axis]
        shape = [len(positions), 1, 1, 1]
        shape[axis + 1] = len(cells)
        out *= np.exp(-0.5 * d ** 2).reshape(shape).astype(np.float32)
    out[np.asarray(labels) < 0.5] = 0.0
    return torch.from_numpy(out)


def point_sigma(stride: Sequence[int], scale: float) -> Float3:
    """Target width per axis: ``scale`` × the feature spacing (wide enough that every lesion
    position has a feature voxel within about one σ, narrow enough to localise)."""
    return float3(scale * float(s) for s in stride)
