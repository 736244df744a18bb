"""The lesion map of an ensemble (:class:`blcam.model.Ensemble`): the mean of its members' maps.

Each member's fast map (:class:`~.dense.DenseLesionMapper`) gives a local-logit grid on the
same feature grid (members share crop, patch and stride: :func:`blcam.ensemble.check_members`),
and the ensemble's grid is their mean. Since a network's crop logit is the crop mean of its
local logits, the ensemble's crop logit, its candidates' scores and its volume score are
exactly those of the ensemble's own output (the mean of the members' logits), and its heatmap
is the class activation of the mean (:func:`.maps.lesion_map`). The members run one after the
other, so the memory a map needs is one member's; the time is the members' sum.

Only the fast map averages this way: the sliding map's heatmap is Grad-CAM per window, not a
function of the local logits, so an ensemble refuses ``--method sliding``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import FractionCallback, LesionMapper, MapOptions, StepCallback
from .dense import DenseLesionMapper
from .maps import LesionMap, lesion_map


class MeanMapper(LesionMapper):
    """One fast map per member, averaged; built by :func:`.registry.make_mapper` for ensembles."""

    def __init__(self, mappers: Sequence[DenseLesionMapper]):
        self.mappers = list(mappers)
        self.crop, self.stride = self.mappers[0].crop, self.mappers[0].stride

    @classmethod
    def build(cls, model, crop, stride, device, options: MapOptions) -> MeanMapper:
        """A :class:`~.dense.DenseLesionMapper` for each of ``model.members``."""
        return cls([DenseLesionMapper.build(m, crop, stride, device, options) for m in model.members])

    def map_with_fraction(self, stored_uint8: np.ndarray, progress: bool = False,
                          on_fraction: FractionCallback | None = None) -> LesionMap:
        """Each member's share of the work reported in turn (member ``n`` of ``K`` spans ``n/K``…``(n+1)/K``)."""
        k = len(self.mappers)
        maps = []
        for n, mapper in enumerate(self.mappers):
            report = None if on_fraction is None else (lambda f, n=n: on_fraction((n + f) / k))
            maps.append(mapper.map_with_fraction(stored_uint8, progress, report))
        return self.mean(maps, stored_uint8.shape)

    def __call__(self, stored_uint8: np.ndarray, progress: bool = False,
                 on_step: StepCallback | None = None) -> LesionMap:
        return self.mean([m(stored_uint8, progress, on_step) for m in self.mappers], stored_uint8.shape)

    @staticmethod
    def mean(maps: Sequence[LesionMap], shape: Sequence[int]) -> LesionMap:
        """The map of the members' mean local logits (and mean bias: the CAM of the mean)."""
        first = maps[0]
        logit = np.asarray(np.mean(np.stack([m.logit for m in maps]), axis=0, dtype=np.float64), np.float32)
        bias = float(np.mean([m.bias for m in maps]))
        assert first.offset is not None, "LesionMap fills its offset"
        return lesion_map(logit, bias, first.stride, first.crop, shape, first.offset, first.window)
