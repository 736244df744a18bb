"""The training loss: binary cross-entropy, optionally focal.

Plain BCE (the paper) weighs every crop and every feature voxel alike. In a patch dataset
with ten healthy crops per lesion crop, most of that weight sits on examples the network
already gets right (clear fat, clear gland), while the lesions that look like normal tissue
(a circumscribed, mildly hypoechoic mass beside fat lobules) stay under-learned even on the
training patches (``bench/RESULTS.md``). The focal loss (Lin et al., RetinaNet, 2017)
multiplies each term by ``(1 - p_t)^γ``, the network's own error on it, so well-classified
examples fade and the hard ones, positive or negative, carry the gradient.

The point targets are soft (a Gaussian around the lesion centre), where ``p_t`` is not
defined; the modulating factor is written ``|t - p|^γ`` instead (the "quality focal loss" of
Li et al., GFL, 2020), which equals ``(1 - p_t)^γ`` for targets of 0 and 1. ``γ = 0`` is BCE
exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_loss(logits: torch.Tensor, targets: torch.Tensor, focal_gamma: float = 0.0) -> torch.Tensor:
    """Mean (focal) binary cross-entropy of ``logits`` against ``targets`` in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if focal_gamma == 0:
        return bce.mean()
    error = (targets - torch.sigmoid(logits)).abs()
    return (error.pow(focal_gamma) * bce).mean()
