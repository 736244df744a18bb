"""Grad-CAM on patches, as the paper computes it, through MONAI's implementation.

Gradient of the lesion logit at the output of the last convolutional block, channel weights
by averaging the gradient over positions, weighted sum of the activations, ReLU, trilinear
upsampling to the input size, scaled to [0, 1]. Two traps of ``monai.visualize.GradCAM``
are avoided here:

* its default post-processing maps the *hottest* voxel to 0 (``ScaleIntensity(minv=1,
  maxv=0)``), so a 0 → 1 ``ScaleIntensity`` is passed instead;
* the target must be ``layer4`` as a whole. MONAI's ResNet block applies one ``ReLU``
  module twice, so a hook on ``layer4.0.act`` captures the *first* (inner) activation's
  gradient paired with the *second* activation's output: a silently wrong map.

MONAI registers its hooks on the network permanently, so they are put on a private copy of
the model, never on the caller's. Upsampling is :func:`.maps.feature_upsampler` (feature
``f`` at the centre of its ``stride``-voxel block, exact for any input size), shared with
the whole-volume paths so that all three maps are comparable voxel for voxel.

This is a patch-level tool, not a whole-volume map (:class:`.base.LesionMapper`): it takes
crop-sized network-input tensors and returns tensors, with neither tiling nor local logits.
``--method sliding`` (:class:`.sliding.SlidingGradCAMMapper`) is what makes a volume map of it.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import torch
from monai.transforms import ScaleIntensity
from monai.visualize import GradCAM

from ..axes import Ints
from ..intensity import network_input
from .maps import feature_upsampler

TARGET_LAYER = "layer4"


@contextlib.contextmanager
def _quiet_hooks():
    """Silence PyTorch's note that the layer4 hook fires on outputs only (that is the intent)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def _scale_0_1(x: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max scaling to [0, 1] (hottest voxel → 1); flat maps stay 0."""
    scaler = ScaleIntensity(minv=0.0, maxv=1.0)
    return torch.stack([torch.as_tensor(scaler(m)) for m in x]).to(x.device)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class PatchGradCAM:
    """Grad-CAM of the lesion logit for batches of patches ``(B, 1, k, j, i)`` (network input scale).

    ``normalise=False`` keeps the raw ``ReLU(Σ_c ᾱ_c A_c)`` values, which are comparable
    between patches (the sliding baseline blends them); ``True`` scales each map to [0, 1]
    as the paper's pictures do.
    """

    def __init__(self, model: torch.nn.Module, stride: Ints, normalise: bool = True):
        self.model = copy.deepcopy(model).eval()
        # Only layer4 needs a graph: its output's gradient is all Grad-CAM uses, so the
        # backward pass stops there instead of running through the whole network.
        for name, p in self.model.named_parameters():
            p.requires_grad_(name.startswith(TARGET_LAYER + "."))
        self.cam = GradCAM(self.model, target_layers=TARGET_LAYER, upsampler=feature_upsampler(stride),
                           postprocessing=_scale_0_1 if normalise else _identity)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The upsampled map, ``(B, 1, k, j, i)``, on ``x``'s device."""
        with torch.enable_grad(), _quiet_hooks():
            return self.cam(x, class_idx=0).detach()

    def last(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and ``layer4`` activations of the last call (for local logits)."""
        hooks = self.cam.nn_module
        if hooks.score is None:
            raise RuntimeError("PatchGradCAM.last() before any call")
        return hooks.score.detach(), hooks.activations[TARGET_LAYER].detach()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The un-upsampled, un-normalised map ``(B, 1, *feature grid)``."""
        with torch.enable_grad(), _quiet_hooks():
            return self.cam.compute_map(x, class_idx=0).detach()


def patch_gradcam(model: torch.nn.Module, patch: np.ndarray, stride: Ints) -> np.ndarray:
    """Grad-CAM of one stored-uint8 or network-scale ``(k, j, i)`` patch, in [0, 1]."""
    x = torch.as_tensor(np.asarray(patch))
    x = network_input(x.float()) if x.dtype == torch.uint8 else x.float()
    device = next(model.parameters()).device
    return PatchGradCAM(model, stride)(x[None, None].to(device))[0, 0].cpu().numpy()
