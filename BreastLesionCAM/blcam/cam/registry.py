"""The ``--method`` names and the map class behind each: adding a map is one class and one entry.

:data:`MAPPERS` is the only list of methods; ``blcam detect``'s ``--method`` choices and
:class:`~blcam.detect.pipeline.DetectSettings` validation read it, so an entry added here
(or at run time, as the tests do) is a method Detect can run by name.
"""

from __future__ import annotations

import torch

from ..axes import Ints
from ..errors import BlcamError
from ..model import Ensemble
from .base import LesionMapper, MapOptions
from .dense import DenseLesionMapper
from .mean_map import MeanMapper
from .sliding import SlidingGradCAMMapper

MAPPERS: dict[str, type[LesionMapper]] = {
    "fast": DenseLesionMapper,
    "sliding": SlidingGradCAMMapper,
}


def make_mapper(method: str, model: torch.nn.Module, crop: Ints, stride: Ints, device: str | torch.device = "cpu",
                options: MapOptions = MapOptions()) -> LesionMapper:
    """The mapper registered as ``method``, built for ``model`` (see :meth:`LesionMapper.build`);
    for an :class:`~blcam.model.Ensemble`, the mean of its members' fast maps (:mod:`.mean_map`)."""
    try:
        cls = MAPPERS[method]
    except KeyError:
        raise BlcamError(f"--method '{method}': choose one of {', '.join(MAPPERS)}") from None
    if isinstance(model, Ensemble):
        if cls is not DenseLesionMapper:
            raise BlcamError(f"--method {method}: an ensemble model maps with --method fast only (its map is the "
                             "mean of its members' local-logit maps)")
        return MeanMapper.build(model, crop, stride, device, options)
    return cls.build(model, crop, stride, device, options)
