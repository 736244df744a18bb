"""One interface for every whole-volume lesion map, so that a new map is one class.

Detect needs one thing from a map: a normalised uint8 volume in, a :class:`.maps.LesionMap`
out (local logits on the feature grid for calibrated scores, and the display heatmap). Like
pytorch-grad-cam's ``BaseCAM``, every method hides its own machinery behind that call:

* :class:`~.dense.DenseLesionMapper` (``--method fast``): one tiled forward pass;
* :class:`~.sliding.SlidingGradCAMMapper` (``--method sliding``): Grad-CAM per window, blended.

Each is built from the same arguments (:meth:`LesionMapper.build`: the network, its training
crop and feature stride, the device, and :class:`MapOptions`), so the ``--method`` registry
(:mod:`.registry`) can construct any of them by name and Detect holds just one mapper.

:class:`~.gradcam.PatchGradCAM` is deliberately *not* a ``LesionMapper``: it maps a batch of
crop-sized network-input tensors to upsampled Grad-CAM tensors, with no whole volume, no
tiling and no local logits. It is the paper's per-patch map and the building block the
sliding mapper applies to every window; wrapping it as a volume map would just be that mapper.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..axes import Int3, Ints
from .maps import LesionMap

StepCallback = Callable[[str, int, int], None]   # (step name, done, total), for callers without a tty
FractionCallback = Callable[[float], None]        # the share of one map done, 0-1


@dataclass(frozen=True)
class MapOptions:
    """The settings any map may read; each map reads only its own and ignores the rest.

    ``max_memory_gb``, ``context``, ``slab_step`` (``None``: :func:`.dense.default_slab_step`
    of the crop and ``patch``, the model's training patch): the fast map
    (:class:`~.dense.DenseLesionMapper`). ``batch_size``: windows per Grad-CAM batch of the
    sliding map. A new map that needs a new setting adds a field here, with a default.
    """

    max_memory_gb: float = 8.0
    context: str = "slab"
    slab_step: int | None = None
    patch: Sequence[int] | None = None
    batch_size: int = 1


class LesionMapper(abc.ABC):
    """Turns normalised volumes into :class:`.maps.LesionMap` s with one network (reuse it across volumes).

    ``crop``: the training crop ``(k, j, i)`` the map's calibrated scores refer to; ``stride``:
    input voxels per feature voxel of the network (a slab map's own stride along ``k`` is
    its slab step, and is recorded in the :class:`.maps.LesionMap` it returns).
    """

    crop: Int3
    stride: Int3
    # Each step's (start, share) of a whole map; a step not listed spans the map (0, 1).
    STEP_SHARES: dict[str, tuple[float, float]] = {}

    @classmethod
    def fraction(cls, step: str, done: int, total: int) -> float:
        """How much of one map is done when ``step`` reports ``done`` of ``total``: callers
        get a single number and never need this map's step names."""
        start, share = cls.STEP_SHARES.get(step, (0.0, 1.0))
        return start + share * min(1.0, done / max(total, 1))

    def map_with_fraction(self, stored_uint8: np.ndarray, progress: bool = False,
                          on_fraction: FractionCallback | None = None) -> LesionMap:
        """:meth:`__call__` reporting the share of the map done (0-1) instead of steps."""
        report = None if on_fraction is None else (lambda s, d, t: on_fraction(self.fraction(s, d, t)))
        return self(stored_uint8, progress, report)

    @classmethod
    @abc.abstractmethod
    def build(cls, model: torch.nn.Module, crop: Ints, stride: Ints, device: str | torch.device,
              options: MapOptions) -> LesionMapper:
        """The mapper for ``model`` (on ``device``), configured by ``options`` (the registry's entry point)."""

    @abc.abstractmethod
    def __call__(self, stored_uint8: np.ndarray, progress: bool = False,
                 on_step: StepCallback | None = None) -> LesionMap:
        """The lesion map of one volume in stored uint8 units (:func:`~blcam.intensity.normalise_volume`).

        ``progress`` shows a tqdm bar; ``on_step(step, done, total)`` reports each step.
        """
