"""Running a convolutional stage over a tensor too large for memory, tile by tile, seamlessly.

A tile's output is identical to the matching part of the untiled output when

* the tile's input starts on a multiple of the stage's total stride (so its output grid is
  the global output grid, shifted by a whole number of cells), and
* the tile's input reaches at least the stage's *receptive-field reach* beyond the output
  cells kept from it (the halo), except where it meets the real border of the tensor, where
  the tile sees exactly the zero (or -inf, for max-pooling) padding the untiled run sees.

The reach is computed from the layers themselves (:func:`stage_geometry`): every 3-wide
convolution adds one input cell of its own grid on each side, so for a chain of layers it
is the sum of ``(kernel - 1) / 2 · dilation · jump`` over the main path, ``jump`` being the
product of the strides before that layer. This is the *theoretical* receptive field: with
it the tiling is exact (to float rounding), not an approximation that depends on the weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..axes import Int3, int3


@dataclass(frozen=True)
class StageGeometry:
    """What tiling a stage needs to know, per axis ``(k, j, i)`` where it applies.

    ``stride``: input cells per output cell; ``reach``: receptive-field reach in input cells,
    one side; ``in_channels``; ``peak_channels``: the largest ``channels / input cells per
    cell`` of any layer output, i.e. the widest activation per input cell (memory planning).
    """

    stride: tuple[int, int, int]
    reach: tuple[int, int, int]
    in_channels: int = 1
    peak_channels: float = 1.0


def triple(v: int | str | tuple[int, ...] | list[int]) -> Int3:
    """A layer's per-axis setting (``kernel_size``, ``stride``...): one int for all axes, or three
    (a string padding such as ``'same'`` raises ``ValueError``)."""
    return int3(v) if isinstance(v, (tuple, list)) else (int(v),) * 3


def stage_geometry(modules: Iterable[nn.Module]) -> StageGeometry:
    """Stride and reach of a chain of modules (MONAI ResNet stem, layers or whole trunk).

    Residual shortcuts (``downsample``: a 1×1 strided convolution) have no reach of their
    own and share the main path's stride, so they are skipped; everything else that
    convolves or pools is walked in forward order.
    """
    jump = [1, 1, 1]
    reach = [0, 0, 0]
    in_channels, peak = None, 0.0
    for module in modules:
        for name, layer in module.named_modules():
            if "downsample" in name.split(".") or not isinstance(layer, (nn.Conv3d, nn.MaxPool3d)):
                continue
            if isinstance(layer, nn.Conv3d):
                in_channels = layer.in_channels if in_channels is None else in_channels
                cells = math.prod(j * s for j, s in zip(jump, triple(layer.stride)))
                peak = max(peak, layer.out_channels / cells)
            kernel, stride = triple(layer.kernel_size), triple(layer.stride)
            dilation, padding = triple(layer.dilation), triple(layer.padding)
            for a in range(3):
                if 2 * padding[a] != (kernel[a] - 1) * dilation[a]:
                    raise ValueError(f"layer {name or type(layer).__name__} is not centred "
                                     f"(kernel {kernel}, padding {padding}); tiling needs centred layers")
                reach[a] += (kernel[a] - 1) // 2 * dilation[a] * jump[a]
                jump[a] *= stride[a]
    return StageGeometry(int3(jump), int3(reach), in_channels or 1, peak)


Box = tuple[slice, slice, slice]


def _box(slices: Sequence[slice]) -> Box:
    k, j, i = slices
    return k, j, i


def plan_tiles(shape: Sequence[int], geometry: StageGeometry, max_voxels: int) -> list[tuple[Box, Box, Box]]:
    """Tiles covering the output grid of a stage applied to an input of ``shape``.

    Returns ``(input_box, keep_in_tile_output, where_in_output)`` slice triples. The core of
    each tile (in output cells) is shrunk, greedily along the axis that saves most, until core
    + halo holds at most ``max_voxels`` input voxels, or until shrinking no longer makes the
    tile smaller (its halo then spans the tensor; the caller's budget check covers that).
    """
    shape = int3(shape)
    stride, out_shape = geometry.stride, tuple(math.ceil(n / s) for n, s in zip(shape, geometry.stride))
    halo = tuple(math.ceil(r / s) for r, s in zip(geometry.reach, stride))  # in output cells

    def tile_voxels(core: Sequence[int]) -> int:
        return math.prod(min((c + 2 * h) * s, n) for c, h, s, n in zip(core, halo, stride, shape))

    core = list(out_shape)
    while tile_voxels(core) > max_voxels:
        # Shrink the axis that saves most; a core whose halo already spans the axis must
        # first drop below the span before the tile gets any smaller.
        trials = []
        for a in range(3):
            step = max(1, core[a] * 3 // 4) if core[a] > 4 else core[a] - 1
            below_span = math.ceil(shape[a] / stride[a]) - 2 * halo[a] - 1
            c = min(step, below_span) if (core[a] + 2 * halo[a]) * stride[a] >= shape[a] else step
            if c >= 1:
                trial = list(core)
                trial[a] = c
                trials.append((tile_voxels(trial), trial))
        best = min(trials, default=None, key=lambda t: t[0])
        if best is None or best[0] >= tile_voxels(core):
            break
        core = best[1]
    tiles = []
    starts = [range(0, o, c) for o, c in zip(out_shape, core)]
    for start in itertools.product(*starts):
        inp: list[slice] = []
        keep: list[slice] = []
        where: list[slice] = []
        for a in range(3):
            lo, hi = start[a], min(start[a] + core[a], out_shape[a])
            in_lo = max(0, (lo - halo[a]) * stride[a])
            in_hi = min(shape[a], (hi + halo[a]) * stride[a])
            inp.append(slice(in_lo, in_hi))
            keep.append(slice(lo - in_lo // stride[a], hi - in_lo // stride[a]))
            where.append(slice(lo, hi))
        tiles.append((_box(inp), _box(keep), _box(where)))
    return tiles


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], source: np.ndarray | torch.Tensor, geometry: StageGeometry,
              out_channels: int, max_voxels: int, device: torch.device, store_dtype: torch.dtype = torch.float32,
              prepare: Callable | None = None, progress: bool = False, desc: str = "tiles",
              on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Apply ``fn`` to ``source`` tile by tile: a batch of inputs with the same grid, a
    ``(B, C, k, j, i)`` tensor or a ``(B, k, j, i)`` array (the same tile of every item runs
    as one batch: oneDNN is several times faster on a batch of thin slabs than on each alone).

    ``prepare(block)`` turns an input block (a slice of ``source``) into the network's
    ``(B, C, k, j, i)`` float tensor on ``device``. The result lives on the CPU in
    ``store_dtype`` (``(B, out_channels, *output_grid)``), so only one tile's activations are
    ever on the device. ``on_tile(done, total)`` reports progress to callers without a tty.
    """
    spatial = tuple(source.shape[-3:])
    out_shape = tuple(math.ceil(n / s) for n, s in zip(spatial, geometry.stride))
    out = torch.empty((source.shape[0], out_channels, *out_shape), dtype=store_dtype)
    tiles = plan_tiles(spatial, geometry, max_voxels)
    prepare = prepare or (lambda block: torch.as_tensor(block).to(device, torch.float32))
    for n, (inp, keep, where) in enumerate(tqdm(tiles, desc=desc, unit="tile", disable=not progress,
                                                leave=False), 1):
        block_at = (Ellipsis, *inp)
        result = fn(prepare(source[block_at]))
        into, keep_part = (slice(None), slice(None), *where), (slice(None), slice(None), *keep)
        out[into] = result[keep_part].to("cpu", store_dtype)
        del result
        if on_tile is not None:
            on_tile(n, len(tiles))
    return out
