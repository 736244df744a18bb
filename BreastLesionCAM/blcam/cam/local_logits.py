"""The network's local-logit map: what point supervision trains and refinement reads.

With global average pooling and one linear unit, a crop's logit is the mean of the *local
logits* ``w · a(f) + b`` over the last block's feature voxels ``f`` (:mod:`blcam.cam.maps`).
:class:`LocalLogitNet` returns that map instead of the mean, and :func:`feature_positions`
says where in the crop each of its voxels sits. Training (:mod:`blcam.training.point_supervision`)
and Detect's refinement (:mod:`blcam.detect.refine`) both use them, so they live with the maps.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
from monai.networks.nets import ResNet
from torch import nn

from ..axes import Ints
from ..model import Ensemble, Network


class LocalLogitNet(nn.Module):
    """A MONAI ResNet that returns its local-logit map ``(B, k, j, i)`` instead of one logit.

    The crop logit is the map's mean (exactly the network's own GAP + linear output); one
    module, so DistributedDataParallel and ``torch.compile`` wrap it as they wrap the net.
    """

    def __init__(self, net: ResNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        a = n.maxpool(n.act(n.bn1(n.conv1(x)))) if not n.no_max_pool else n.act(n.bn1(n.conv1(x)))
        a = n.layer4(n.layer3(n.layer2(n.layer1(a))))
        fc = n.fc
        assert fc is not None, "a classifier network (build_model) has its linear layer"
        return torch.einsum("bc...,c->b...", a, fc.weight[0]) + fc.bias[0]


class MeanLocalLogitNet(nn.Module):
    """The mean of an :class:`~blcam.model.Ensemble`'s members' local-logit maps (their mean
    is the ensemble's map, as :mod:`blcam.cam.mean_map` builds it for a whole volume)."""

    def __init__(self, ensemble: Ensemble):
        super().__init__()
        self.nets = nn.ModuleList(LocalLogitNet(cast(ResNet, m)) for m in ensemble.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([n(x) for n in self.nets]).mean(dim=0)


def local_logit_net(model: Network) -> nn.Module:
    """The local-logit map of a network or an ensemble."""
    return MeanLocalLogitNet(model) if isinstance(model, Ensemble) else LocalLogitNet(model)


def feature_positions(crop: Ints, stride: Ints) -> list[np.ndarray]:
    """Voxel position of each feature voxel of a crop, per axis (module doc)."""
    out = []
    for n, s in zip(crop, stride):
        cells = math.ceil(n / s)
        out.append(np.array([(n - 1) / 2]) if cells == 1 else np.arange(cells) * float(s))
    return out
