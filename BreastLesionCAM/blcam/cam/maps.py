"""From a feature-grid lesion map to what people and the candidate finder look at.

**Where a feature voxel sits.** Feature voxel ``f`` of the last block is placed at the
centre of its receptive field, voxel ``stride · f`` (:func:`feature_offset` is 0): every
layer of the network is centred and its strided convolutions keep index 0. That is also
where a trained network answers for a lesion: training keeps the lesion near voxel
``crop // 2`` of each crop, which for the paper's 16×160×160 crops is the receptive-field
centre of in-plane feature 5 (80 = 5 · 16); along the flipped axes (k, i) the lesion sits
half the time at ``crop - 1 - crop // 2`` instead, so nothing can favour either side of it.
The image-resize convention (``stride · f + (stride - 1) / 2``, MONAI's default upsampling)
puts every peak half a stride too far: on the demo's trained model it moved peaks 8 voxels
along i, and the share of lesions whose nearest top-10 candidate lies in the lesion mask
fell from 0.33 to 0.04 (``blcam evaluate-detection`` reports
the mean signed peak-to-centre offset per axis, so a residual bias shows up in every
evaluation). Upsampling interpolates linearly between feature positions and holds the edge
values beyond the outermost ones; the patch Grad-CAM, the sliding baseline and the fast path
all use it, so the three agree voxel for voxel. In slab mode each slab is one crop depth
and answers for its centre slice (:class:`~blcam.cam.dense.DenseLesionMapper`).

**Calibration.** The network ends in global average pooling and one linear unit, so the
logit of a crop is the mean over the crop's feature voxels of the *local logit*
``w · a(f) + b``. Averaging the local-logit map over the feature voxels of a crop-sized box
therefore gives the logit the network would output for that crop (up to the crop's border
padding, which the whole-volume pass replaces by real context): a lesion probability on the
scale the network was trained and evaluated on. A [0, 1]-normalised heatmap has no such
meaning: it puts a hot spot in every healthy volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.ndimage import uniform_filter1d

from ..axes import Float3, Floats, Int3, Ints, float3


def feature_offset(stride: Ints) -> tuple[float, ...]:
    """Voxel position of feature 0 per axis: its receptive-field centre, voxel 0 (module doc)."""
    return tuple(0.0 for _ in stride)


def _axis_weights(n_out: int, n_in: int, stride: int, offset: float, start: int = 0):
    """Neighbouring grid cells and the weight of the upper one for output voxels ``start..``."""
    pos = np.clip((np.arange(start, start + n_out) - offset) / stride, 0, n_in - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), max(n_in - 2, 0))
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def _interp(a: torch.Tensor, axis: int, weights: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    i0, i1, w = weights
    shape = [1] * a.ndim
    shape[axis] = len(w)
    weight = torch.from_numpy(w).reshape(shape).to(a.device, a.dtype)
    lo = a.index_select(axis, torch.from_numpy(i0).to(a.device))
    hi = a.index_select(axis, torch.from_numpy(i1).to(a.device))
    return torch.lerp(lo, hi, weight)


def upsample_features(grid: np.ndarray | torch.Tensor, shape: Ints, stride: Ints, offset: Floats | None = None,
                      out: np.ndarray | None = None, chunk: int = 16) -> np.ndarray:
    """Trilinear upsampling of a ``(k, j, i)`` feature grid to voxel ``shape`` (see module doc).

    Works through the output in slabs of ``chunk`` slices, so the only full-size array is
    the result (ABUS-size volumes: 0.8 GB of float32, no temporary copies of it).
    """
    g = torch.as_tensor(np.asarray(grid, np.float32))
    shape = tuple(int(n) for n in shape)
    offset = feature_offset(stride) if offset is None else offset
    out = np.empty(shape, np.float32) if out is None else out
    wj = _axis_weights(shape[1], g.shape[1], stride[1], offset[1])
    wi = _axis_weights(shape[2], g.shape[2], stride[2], offset[2])
    for k0 in range(0, shape[0], chunk):
        n = min(chunk, shape[0] - k0)
        slab = _interp(g, 0, _axis_weights(n, g.shape[0], stride[0], offset[0], k0))
        out[k0:k0 + n] = _interp(_interp(slab, 1, wj), 2, wi).numpy()
    return out


def feature_upsampler(stride: Ints, offset: Floats | None = None) -> Callable[[Ints],
                      Callable[[torch.Tensor], torch.Tensor]]:
    """The same upsampling in MONAI's ``upsampler(spatial_size)(tensor)`` form (``(B, C, ...)``)."""
    offset = feature_offset(stride) if offset is None else offset

    def make(spatial_size: Ints) -> Callable[[torch.Tensor], torch.Tensor]:
        def up(x: torch.Tensor) -> torch.Tensor:
            size = tuple(int(n) for n in spatial_size)
            wk, wj, wi = (_axis_weights(n, m, s, o) for n, m, s, o in zip(size, x.shape[2:], stride, offset))
            return _interp(_interp(_interp(x, 2, wk), 3, wj), 4, wi)
        return up
    return make


def crop_window(crop: Ints, stride: Ints, offset: Floats | None = None) -> list[tuple[int, int]]:
    """Feature offsets ``(lo, hi)`` per axis of the crop that answers for feature ``p``.

    A crop of ``n`` voxels starting on a multiple of ``stride`` has ``ceil(n / stride)``
    feature voxels on the volume's own grid; of those crops, the one whose centre lies
    nearest feature ``p``'s position holds features ``p + lo .. p + hi``.
    """
    offset = feature_offset(stride) if offset is None else offset
    out = []
    for n, s, o in zip(crop, stride, offset):
        lo = math.floor((o - n / 2) / s + 0.5)   # ties (a crop of an odd number of strides): centred window
        out.append((lo, lo + math.ceil(n / s) - 1))
    return out


def crop_mean(grid: np.ndarray, crop: Ints, stride: Ints, offset: Floats | None = None,
              window: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """Mean of ``grid`` over the crop-sized box at every feature voxel (border-aware).

    Near the volume border only the feature voxels inside the volume are averaged, as the
    network's global pooling averages only over the crop it was given.
    """
    grid = np.asarray(grid, np.float64)
    total, count = grid, np.ones_like(grid)
    for axis, (lo, hi) in enumerate(window or crop_window(crop, stride, offset)):
        size = hi - lo + 1
        origin = -(size // 2) - lo
        total = uniform_filter1d(total, size, axis=axis, mode="constant", origin=origin)
        count = uniform_filter1d(count, size, axis=axis, mode="constant", origin=origin)
    return (total / np.maximum(count, 1e-12)).astype(np.float32)


@dataclass
class LesionMap:
    """A volume's lesion evidence on the last block's feature grid, plus its display heatmap.

    ``logit``: local logit ``w · a + b`` per feature voxel (``(k, j, i)``), ``stride``: input
    voxels per feature voxel, ``offset``: voxel position of feature 0 (:func:`feature_offset`),
    ``crop``: the training crop (for calibrated scores), ``window``: the feature offsets a crop
    spans per axis when they are not :func:`crop_window` 's (one row per slab in slab mode),
    ``heatmap``: ``(k, j, i)`` float32 in [0, 1] at the volume's size (ReLU'd class
    activation, upsampled, divided by its maximum ``cam_max``).
    """

    logit: np.ndarray
    bias: float
    stride: tuple[int, int, int]
    crop: tuple[int, int, int]
    heatmap: np.ndarray
    cam_max: float
    offset: tuple[float, float, float] | None = None
    window: list[tuple[int, int]] | None = None

    def __post_init__(self) -> None:
        self.offset = float3(feature_offset(self.stride) if self.offset is None else self.offset)

    def crop_logit(self) -> np.ndarray:
        """The network's logit for a training-sized crop centred on each feature voxel."""
        return crop_mean(self.logit, self.crop, self.stride, self.offset, self.window)

    def feature_to_index(self, f_kji: ArrayLike) -> np.ndarray:
        """Continuous feature coordinates ``(k, j, i)`` to continuous voxel ``(k, j, i)``."""
        return np.asarray(f_kji, float) * np.asarray(self.stride, float) + np.asarray(self.offset)


def lesion_map(logit: np.ndarray, bias: float, stride: Int3, crop: Int3, shape: Ints, offset: Float3,
               window: list[tuple[int, int]] | None = None) -> LesionMap:
    """The :class:`LesionMap` of a local-logit grid: its display heatmap is the class activation
    ``ReLU(logit - bias)`` (= ``ReLU(w · a)``, CAM), upsampled to ``shape`` and normalised."""
    cam = np.maximum(logit - np.float32(bias), 0)
    heat, top = normalise_heatmap(upsample_features(cam, shape, stride, offset))
    return LesionMap(logit, bias, stride, crop, heat, top, offset, window)


def normalise_heatmap(cam_volume: np.ndarray) -> tuple[np.ndarray, float]:
    """Divide a ReLU'd activation volume by its maximum, in place; returns ``(map, max)``."""
    top = float(cam_volume.max()) if cam_volume.size else 0.0
    if top > 0:
        cam_volume *= np.float32(1.0 / top)
    return cam_volume, top
