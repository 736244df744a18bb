"""Random zoom about the clicked centre: more lesion appearances from the same few clicks.

Why: a cohort of 100–150 patients holds only 20–30 examples of a lesion kind that looks
much like tissue (the phantom's oval masses), and a classifier's held-out AUC for such a kind
against plain tissue rose by about 0.05 with every fourfold increase in its examples
(``bench/oval_separability.py``, ``bench/RESULTS.md``). The paper augments with flips only;
a random zoom shows each lesion at more sizes, a standard augmentation (MONAI's ``RandZoom``,
the random-resized crops of 2D classification).

How, and why only magnification: each training crop is resampled by a factor
``s ∈ [1, 1 + zoom]`` about the patch centre's position in the crop. That point is the
clicked lesion centre in a lesion crop and a random place in a healthy one: both are treated
alike, so the zoom itself tells nothing about the label. The fixed point keeps the lesion where
the point targets (:mod:`.point_supervision`) put it, and with ``s ≥ 1`` every sampled point
lies inside the crop, so no padding (which the default recipe keeps out of training) enters.
Evaluation and Detect never zoom.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..axes import Ints
from .data import STREAM_ZOOM, draw_rngs


def random_zooms(seed: int, epoch: int, indices: Ints, zoom: float, repeats: Ints | None = None) -> np.ndarray:
    """Per draw a factor in ``[1, 1 + zoom]``, log-uniform (as likely to grow a lesion by 10 %
    at the bottom of the range as at the top), reproducible per (seed, epoch, patch, repeat)
    on a stream of its own (:func:`.data.draw_rngs`), so the crops and flips do not change."""
    out = np.ones(len(indices), np.float64)
    top = np.log1p(zoom)
    for row, _, rng in draw_rngs(seed, STREAM_ZOOM, epoch, indices, repeats):
        out[row] = np.exp(rng.uniform(0.0, top))
    return out


def source_positions(size: Sequence[int], centres: np.ndarray, scales: np.ndarray,
                     device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Per axis ``(B, n)``: where output voxel ``c`` of a magnified crop reads its input,
    ``centre + (c − centre) / s``, with the centre clipped into the crop (so, for ``s ≥ 1``,
    every position lies in ``[0, n − 1]``)."""
    centre = torch.as_tensor(np.clip(centres, 0, np.asarray(size) - 1), dtype=torch.float32, device=device)
    scale = torch.as_tensor(scales, dtype=torch.float32, device=device)[:, None]
    return [centre[:, ax:ax + 1] + (torch.arange(n, dtype=torch.float32, device=device)[None, :]
                                    - centre[:, ax:ax + 1]) / scale for ax, n in enumerate(size)]


def zoom_about(crops: torch.Tensor, centres: np.ndarray, scales: np.ndarray) -> torch.Tensor:
    """``(B, k, j, i)`` crops (any dtype) → float crops magnified by ``scales[b]`` about
    ``centres[b]`` (:func:`source_positions`; trilinear, ``s = 1`` is the identity)."""
    size, b = crops.shape[1:], len(crops)
    k, j, i = (2.0 * p / max(n - 1, 1) - 1.0                    # align_corners=True coordinates
               for p, n in zip(source_positions(size, centres, scales, crops.device), size))
    grid = torch.stack([i[:, None, None, :].expand(b, *size), j[:, None, :, None].expand(b, *size),
                        k[:, :, None, None].expand(b, *size)], dim=-1)   # grid_sample's (x, y, z) = (i, j, k)
    # 'border' only guards against fp32 rounding at the faces: the positions lie inside.
    out = F.grid_sample(crops[:, None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, 0]


def zoomed(crops: torch.Tensor, centres: np.ndarray, scales: np.ndarray | None,
           drawn: slice | Sequence[int]) -> torch.Tensor:
    """The training loop's hook: ``crops`` unchanged without zoom, else :func:`zoom_about`
    with this batch's rows (``drawn``) of the epoch's centres and factors."""
    if scales is None:
        return crops
    return zoom_about(crops, centres[drawn], scales[drawn])
