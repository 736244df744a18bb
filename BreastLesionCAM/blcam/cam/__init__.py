"""Class activation maps: patch Grad-CAM (the paper), and whole-volume lesion maps.

``base`` (:class:`LesionMapper`, the one interface of a whole-volume map), ``registry`` (the
``--method`` names and :func:`make_mapper`), ``gradcam`` (MONAI Grad-CAM on patches, the
paper's method), ``dense`` (the fast path: one tiled forward pass, the CAM of the final
linear layer, which equals Grad-CAM for a network ending in global average pooling + one
linear unit), ``sliding`` (the naive baseline: Grad-CAM on every crop-sized window,
blended), ``maps`` (where feature voxels sit, upsampling, calibrated crop-level
probabilities), ``tiling`` (exact receptive-field-halo tiling).
"""

from .base import LesionMapper, MapOptions
from .dense import CONTEXTS, DenseLesionMapper
from .gradcam import PatchGradCAM, patch_gradcam
from .maps import LesionMap
from .registry import MAPPERS, make_mapper
from .sliding import SlidingGradCAMMapper, sliding_lesion_map

__all__ = ["CONTEXTS", "DenseLesionMapper", "LesionMap", "LesionMapper", "MAPPERS", "MapOptions", "PatchGradCAM",
           "SlidingGradCAMMapper", "make_mapper", "patch_gradcam", "sliding_lesion_map"]
