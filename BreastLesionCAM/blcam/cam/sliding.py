"""The naive whole-volume heatmap: patch Grad-CAM on every crop-sized tile, blended.

This is what one would do with the paper's method as published (``--method sliding``):
MONAI's ``sliding_window_inference`` moves a training-crop-sized window with 50 % overlap
over the volume, each window gets a Grad-CAM (a forward *and* a backward pass), and the
windows are blended with a Gaussian weight so their borders, where the network saw zero
padding instead of tissue, count least. It is slow (one backward per tile, ~8 tiles per
voxel) but independent of the fast path's algebra, which makes it the correctness
reference for :mod:`.dense`.

Each window also yields its local logits ``w · A + b`` (from the same forward pass), blended
the same way and sampled at the feature-voxel centres, so both methods produce the same
:class:`.maps.LesionMap` and the same calibrated candidate scores. :class:`SlidingGradCAMMapper`
puts it behind the one map interface (:mod:`.base`); the function stays the implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from scipy.ndimage import map_coordinates

from ..axes import Ints, int3
from ..intensity import PAD_VALUE, network_input
from .base import LesionMapper, MapOptions, StepCallback
from .gradcam import PatchGradCAM
from .maps import LesionMap, feature_offset, feature_upsampler, normalise_heatmap

OVERLAP = 0.5


def window_count(shape: Sequence[int], crop: Sequence[int], overlap: float = OVERLAP) -> int:
    """Number of windows ``sliding_window_inference`` visits (for progress reports)."""
    size = [max(n, c) for n, c in zip(shape, crop)]
    interval = [c if n == c else max(1, int(c * (1 - overlap))) for n, c in zip(size, crop)]
    return len(dense_patch_slices(size, crop, interval))


def sliding_lesion_map(model: torch.nn.Module, stored_uint8: np.ndarray, crop: Ints, stride: Ints,
                       device: str | torch.device = "cpu", batch_size: int = 1, overlap: float = OVERLAP,
                       progress: bool = False, on_step: StepCallback | None = None) -> LesionMap:
    """Blend patch Grad-CAMs (and local logits) of every window into a :class:`LesionMap`."""
    device = torch.device(device)
    size = int3(crop)
    cam = PatchGradCAM(model.to(device), stride, normalise=False)
    fc = cast(torch.nn.Linear, cam.model.fc)   # MONAI ResNet's final linear unit (one logit)
    weight = fc.weight.detach().reshape(-1)
    bias = float(fc.bias.detach().reshape(-1)[0])
    up = feature_upsampler(stride)(size)
    total, done = window_count(stored_uint8.shape, size, overlap), [0]

    def predictor(x: torch.Tensor) -> torch.Tensor:
        heat = cam(x)
        _, acts = cam.last()
        local = torch.einsum("bc...,c->b...", acts, weight).unsqueeze(1) + bias
        done[0] += x.shape[0]
        if on_step is not None:
            on_step("sliding", min(done[0], total), total)
        return torch.cat([heat, up(local)], 1).detach()

    x = network_input(torch.from_numpy(stored_uint8).float())[None, None]
    pad = float(network_input(torch.tensor(float(PAD_VALUE))))
    # one tensor per window from the predictor, so one blended tensor
    blended = cast(torch.Tensor, sliding_window_inference(x, size, batch_size, predictor, overlap=overlap,
                                                          mode="gaussian", cval=pad, sw_device=device,
                                                          device="cpu", progress=progress))
    del x
    heat, top = normalise_heatmap(blended[0, 0].numpy())
    return LesionMap(sample_at_features(blended[0, 1].numpy(), stride), bias, int3(stride), size, heat, top)


class SlidingGradCAMMapper(LesionMapper):
    """``--method sliding``: :func:`sliding_lesion_map` behind the :class:`.base.LesionMapper` call.

    Holds the network and the window settings; each call maps one volume (Grad-CAM works on
    its own copy of the network, so the caller's model is never hooked).
    """

    def __init__(self, model: torch.nn.Module, crop: Ints, stride: Ints, device: str | torch.device = "cpu",
                 batch_size: int = 1, overlap: float = OVERLAP) -> None:
        self.model, self.device = model, torch.device(device)
        self.crop = int3(crop)
        self.stride = int3(stride)
        self.batch_size, self.overlap = batch_size, overlap

    @classmethod
    def build(cls, model: torch.nn.Module, crop: Ints, stride: Ints, device: str | torch.device,
              options: MapOptions) -> SlidingGradCAMMapper:
        return cls(model, crop, stride, device, options.batch_size)

    def __call__(self, stored_uint8: np.ndarray, progress: bool = False,
                 on_step: StepCallback | None = None) -> LesionMap:
        return sliding_lesion_map(self.model, stored_uint8, self.crop, self.stride, self.device,
                                  self.batch_size, self.overlap, progress, on_step)


def sample_at_features(volume: np.ndarray, stride: Ints) -> np.ndarray:
    """Values of a voxel map at the feature positions (trilinear; :func:`.maps.feature_offset`)."""
    offset = feature_offset(stride)
    axes = [np.clip(np.arange(math.ceil(n / s)) * s + o, 0, n - 1)
            for n, s, o in zip(volume.shape, stride, offset)]
    return map_coordinates(volume, np.meshgrid(*axes, indexing="ij"), order=1).astype(np.float32)
