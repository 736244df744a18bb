"""The fast whole-volume lesion map: one tiled forward pass instead of thousands of Grad-CAMs.

For a network that ends in global average pooling and one linear unit, the gradient of the
logit with respect to the last feature map ``A`` is ``w / N`` at every position, so the
Grad-CAM channel weights are ``w / N`` and Grad-CAM is ``ReLU(w · A) / N``: the class
activation map of the final linear weights (Zhou et al.'s CAM). No backward pass is needed,
and since everything up to the pooling is convolutional, one forward pass over the whole
volume yields the *local logit* ``w · A + b`` at every feature voxel.

Memory decides the design. MONAI's stem keeps full resolution with 64 channels (256 bytes
per voxel for one activation: ~50 GB for an ABUS volume), and tiling the whole network at
once would need a halo of its full receptive field (50 voxels per side for ResNet-10, 110 for
ResNet-18) around every tile: most of each tile would be halo. So the trunk runs as a chain
of stages, each tiled with only *its own* reach (:mod:`.tiling`, exact by construction):

=============  ===========================  ==========================================
stage          reach (cells of its input)   output, kept on the CPU
=============  ===========================  ==========================================
stem + layer1  8 voxels (ResNet-10)         64 ch at 1/8 of the voxels, bfloat16
layer2         3 cells                      128 ch at 1/64, bfloat16
layers 3–4 +   9 cells                      1 ch (the local logit), float32
linear as 1×1
=============  ===========================  ==========================================

70 % of the FLOPs are in the first stage, whose halo is tiny; the later stages see small
grids whose halos are cheap. Batch norm is folded into the convolutions (exact in eval
mode), activations are channels-last (oneDNN/cuDNN work in that layout without reorder
copies), CUDA tiles run under bf16 autocast and the CPU in float32. The bfloat16 stores
round each stored activation once (relative error ≤ 2⁻⁹); the tests bound the resulting
change of every local logit by first-order error propagation from those roundings.
``store=None`` keeps every stage in ``dtype`` (float64 makes the path exact to rounding,
which the Grad-CAM equivalence test uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from tqdm import tqdm

from ..axes import Int3, Ints, float3, int3
from ..errors import BlcamError
from ..intensity import network_input
from .base import LesionMapper, MapOptions, StepCallback
from .maps import LesionMap, crop_window, feature_offset, lesion_map
from .tiling import StageGeometry, run_tiled, stage_geometry

if TYPE_CHECKING:
    from monai.networks.nets import ResNet

GB = 1024 ** 3
BASELINE_BYTES = 0.6 * GB   # Python, torch, the model: resident before any tile
HEADROOM = 1.3              # measured tile peaks stay below the estimate × this
# Per voxel of the whole volume, held through a CPU pass: the uint8 volume, the float32
# heatmap, and 3 bytes of slack for what the allocator keeps (an ABUS-size volume in one
# --context volume pass peaked at 8.24 GB with 5, over its 8 GB budget).
RESIDENT_BYTES = 8


def _linear_as_conv(fc: nn.Linear) -> nn.Conv3d:
    """The final linear unit applied at every feature voxel (the local logit)."""
    conv = nn.Conv3d(fc.in_features, fc.out_features, 1)
    with torch.no_grad():
        conv.weight.copy_(fc.weight.reshape(fc.out_features, fc.in_features, 1, 1, 1))
        bias = conv.bias
        assert bias is not None, "Conv3d has a bias by default"
        bias.copy_(fc.bias)
    return conv


class _Stage:
    def __init__(self, name: str, net: nn.Module, geometry: StageGeometry, out_channels: int,
                 store: torch.dtype) -> None:
        self.name, self.net, self.geometry = name, net, geometry
        self.out_channels, self.store = out_channels, store


CONTEXTS = ("slab", "volume")
# Slabs passed as one batch. oneDNN picks a several times faster convolution for larger
# problems: on a 2-core AVX-512 CPU a 15-slice slab of 100×346 voxels took as long alone as
# four of them in one batch (the stem: 0.64 s against 0.67 s; bench/RESULTS.md).
SLAB_BATCH = 4


def default_slab_step(crop: Ints, patch: Ints | None = None) -> int:
    """Slices between slabs that keep every lesion as close to a slab's centre as training did.

    A training crop of depth ``c`` sits anywhere in a patch of depth ``p`` centred on the
    lesion, so the lesion was up to ``(p - c) / 2`` slices off the crop's centre; slabs every
    ``p - c`` slices keep every slice within that of a slab's centre (12 for the paper's 28/16).
    Without a patch size, or when ``p - c`` is not in ``[1, c]``: half the crop depth.
    """
    c = int(crop[0])
    jitter = int(patch[0]) - c if patch is not None else 0
    return jitter if 1 <= jitter <= c else max(1, c // 2)


def slab_starts(depth: int, crop_depth: int, step: int) -> list[int]:
    """First slice of each slab, every ``step`` slices, until a slab reaches the end (the last
    may be shorter than ``crop_depth``; one slab when the volume is no deeper than a crop)."""
    reach = max(depth - crop_depth, 0)
    return list(range(0, reach + step, step)) if reach else [0]


class DenseLesionMapper(LesionMapper):
    """``--method fast``: :class:`LesionMap` s of whole volumes with one model (reuse it across volumes).

    ``max_memory_gb`` bounds the process's RAM on the CPU, the device memory on CUDA; tiles
    are sized to fit it (:meth:`plan`). ``dtype`` is the tiles' compute type (float32; float64
    for exactness checks), ``store`` the type the early stages' outputs are kept in between
    stages (bfloat16 halves the largest store; ``None`` keeps ``dtype``).

    ``context`` decides what each feature voxel may see along the slice axis ``k``:

    * ``"slab"`` (default): the volume is read as slabs of the training crop's depth (16
      slices) starting every few slices, each slab whole in-plane: exactly the depth of
      context the network was trained with (a 16-slice crop, zero padding beyond), and how
      the paper drew its whole-volume heatmaps (Fig. 3: 9 × H × W patches). One row of
      local logits per slab, placed at the slab's centre, every ``slab_step`` slices
      (:func:`default_slab_step`: 12 for the paper's 28-slice patches and 16-slice crops,
      i.e. every voxel read 1.33 times; the crop depth reads it once, exactly the work of
      ``"volume"`` without its halo).
    * ``"volume"``: one pass over the whole volume (every voxel read once, ~2× faster). Each
      feature then sees up to its full receptive field in ``k`` (±50 slices for ResNet-10), real
      tissue where training only ever showed padding, which shifts its logits: measured on
      the phantom, healthy volumes then score higher and localisation is worse (see
      ``bench/RESULTS.md``).
    """

    # the volume context's stages (70 % of the FLOPs are in the first); slabs report "slabs"
    STEP_SHARES = {"stem+layer1": (0.0, 0.7), "layer2": (0.7, 0.1), "layers3-4": (0.8, 0.2)}

    def __init__(self, model: nn.Module, crop: Ints, device: str | torch.device = "cpu",
                 max_memory_gb: float = 8.0, context: str = "slab", slab_step: int | None = None,
                 dtype: torch.dtype = torch.float32, store: torch.dtype | None = torch.bfloat16,
                 cpu_bf16: bool = False, channels_last: bool = True) -> None:
        if context not in CONTEXTS:
            raise BlcamError(f"unknown context '{context}'; choose one of {', '.join(CONTEXTS)}")
        if slab_step is not None and not 1 <= slab_step <= crop[0]:
            raise BlcamError(f"slab step {slab_step} must be between 1 and the crop depth {crop[0]}")
        self.context = context
        self.slab_step = slab_step or max(1, int(crop[0]) // 2)
        # build_model's MONAI ResNet, whose layers are typed (nn.Module's own attributes are Tensor | Module)
        resnet = cast("ResNet", model)
        fc = resnet.fc if hasattr(resnet, "fc") else None
        if fc is None or fc.out_features != 1:
            raise BlcamError("the fast path needs a network ending in pooling + one linear unit")
        self.device = torch.device(device)
        self.dtype = dtype
        # bf16 autocast: always on CUDA; on the CPU only when asked (bench/cpu_speed.py measures
        # whether it pays on a given CPU). channels_last: oneDNN's native layout (measured there too).
        self.autocast = dtype == torch.float32 and (self.device.type == "cuda" or
                                                    (cpu_bf16 and self.device.type == "cpu"))
        self.layout = torch.channels_last_3d if channels_last else torch.contiguous_format
        resnet.eval()
        stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act,
                             *([] if resnet.no_max_pool else [resnet.maxpool]), resnet.layer1)
        kept = store or dtype   # the early stages' outputs are stored in this type (see class doc)
        parts = [("stem+layer1", stem, kept), ("layer2", resnet.layer2, kept),
                 ("layers3-4", nn.Sequential(resnet.layer3, resnet.layer4), None)]
        self.stages: list[_Stage] = []
        for name, part, keep in parts:
            geometry = stage_geometry([part])
            net = fuse(part)
            out_channels = [m for m in part.modules() if isinstance(m, nn.Conv3d)][-1].out_channels
            if keep is None:        # the last stage ends in the local logit, kept at full precision
                net, out_channels, keep = nn.Sequential(net, _linear_as_conv(fc)), 1, dtype
            # torch's stubs lack Module.to's memory_format keyword
            net = net.to(self.device, dtype, memory_format=self.layout).eval()  # type: ignore[call-overload]
            self.stages.append(_Stage(name, net, geometry, out_channels, keep))
        self.stride = int3(math.prod(s.geometry.stride[a] for s in self.stages) for a in range(3))
        self.bias = float(fc.bias.detach().reshape(-1)[0])
        self.crop = int3(crop)
        self.max_memory_gb = float(max_memory_gb)

    @classmethod
    def build(cls, model: nn.Module, crop: Ints, stride: Ints, device: str | torch.device,
              options: MapOptions) -> DenseLesionMapper:
        """The fast map as Detect runs it. ``stride`` is not needed: it is read off the network's
        layers; the slab step defaults to :func:`default_slab_step` of the crop and training patch."""
        step = options.slab_step or default_slab_step(crop, options.patch)
        return cls(model, crop, device, options.max_memory_gb, options.context, step)

    # ------------------------------------------------------------------ memory planning
    def plan(self, shape: Sequence[int], resident_voxels: int | None = None, batch: int = 1) -> list[int]:
        """Largest tile (in input cells) per stage such that the whole pass fits the budget.

        A tile's peak is its input (float) plus the widest activation, 1.5 × the widest layer
        output per input cell (a block holds its two convolution outputs at once, the stem
        its conv1 output and the pooled copy), times :data:`HEADROOM`. On the CPU the budget
        also pays for the stores of the stage's input and output, the uint8 volume and the
        float32 heatmap (:data:`RESIDENT_BYTES` per voxel of ``resident_voxels``, the whole
        volume when ``shape`` is one slab);
        on CUDA those live in host RAM, and the budget is device memory. ``batch`` items of
        ``shape`` run together: every per-cell cost and every store is ``batch`` times larger.
        """
        resident = math.prod(shape) if resident_voxels is None else resident_voxels
        item = 2 if self.autocast else self.dtype.itemsize
        grids: list[tuple[int, ...]] = []
        grid = tuple(shape)
        for stage in self.stages:
            grids.append(grid)
            grid = tuple(math.ceil(n / s) for n, s in zip(grid, stage.geometry.stride))
        grids.append(grid)
        cells = []
        for n, stage in enumerate(self.stages):
            g = stage.geometry
            per_cell = batch * HEADROOM * item * (g.in_channels + 1.5 * g.peak_channels)
            if self.device.type == "cuda":
                fixed = 0.5 * GB
            else:
                stores = batch * sum(math.prod(grids[m + 1]) * s.out_channels * s.store.itemsize
                             for m, s in enumerate(self.stages) if m in (n - 1, n))
                fixed = BASELINE_BYTES + stores + RESIDENT_BYTES * resident
            smallest = per_cell * math.prod(2 * r + 2 * s for r, s in zip(g.reach, g.stride))
            budget = self.max_memory_gb * GB - fixed
            if budget < smallest:
                raise BlcamError(f"--max-memory-gb {self.max_memory_gb:g} is too small for a volume of "
                                 f"{'×'.join(map(str, shape))} voxels (stage {stage.name} needs at least "
                                 f"{(fixed + smallest) / GB:.1f} GB)")
            cells.append(int(budget / per_cell))
        return cells

    # ------------------------------------------------------------------ the pass
    def _forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            return net(x.contiguous(memory_format=self.layout))

    def logit_grid(self, stored_uint8: np.ndarray, progress: bool = False, on_step: StepCallback | None = None,
                   resident_voxels: int | None = None) -> np.ndarray:
        """Local-logit grid ``(k, j, i)`` of one pass over ``stored_uint8`` (normalised uint8)."""
        return self.logit_grids(stored_uint8[None], progress, on_step, resident_voxels)[0]

    def logit_grids(self, stack_uint8: np.ndarray, progress: bool = False, on_step: StepCallback | None = None,
                    resident_voxels: int | None = None) -> np.ndarray:
        """Local-logit grids ``(B, k, j, i)`` of ``B`` equal-sized blocks, passed as one batch."""
        cells = self.plan(stack_uint8.shape[1:], resident_voxels, batch=len(stack_uint8))

        def first(block: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(block)).to(self.device)
            return network_input(t.to(self.dtype))[:, None]

        def later(block: torch.Tensor) -> torch.Tensor:
            return block.to(self.device, self.dtype)

        data: np.ndarray | torch.Tensor = stack_uint8
        for n, stage in enumerate(self.stages):
            report = None if on_step is None else (lambda done, total, s=stage.name: on_step(s, done, total))
            data = run_tiled(partial(self._forward, stage.net), data, stage.geometry,
                             stage.out_channels, cells[n], self.device, stage.store,
                             first if n == 0 else later, progress, stage.name, report)
        assert isinstance(data, torch.Tensor), "every mapper has its three stages"
        return data[:, 0].numpy()

    def slab_starts(self, depth: int) -> list[int]:
        return slab_starts(depth, self.crop[0], self.slab_step)

    def _slab_grid(self, stored: np.ndarray, progress: bool, on_step: StepCallback | None) -> np.ndarray:
        """One row per slab; slabs run :data:`SLAB_BATCH` at a time (fewer where the memory
        budget asks), since a batch of thin slabs costs little more than one of them."""
        starts = self.slab_starts(stored.shape[0])
        batch = self._slab_batch(min(self.crop[0], stored.shape[0]), stored.shape[1:], stored.size, len(starts))
        rows = []
        bar = tqdm(total=len(starts), desc="slabs", unit="slab", disable=not progress, leave=False)
        # Only the last slab can be shorter than a crop; it runs alone (a batch needs equal shapes).
        full = starts if starts[-1] + self.crop[0] <= stored.shape[0] else starts[:-1]
        groups = [full[n:n + batch] for n in range(0, len(full), batch)] + [[s] for s in starts[len(full):]]
        for group in groups:
            stack = np.stack([stored[s:s + self.crop[0]] for s in group])
            for grid in self.logit_grids(stack, resident_voxels=stored.size):
                rows.append(grid.mean(axis=0))  # one crop depth → one row (its features' mean, as GAP does)
            bar.update(len(group))
            if on_step is not None:
                on_step("slabs", len(rows), len(starts))
        bar.close()
        return np.stack(rows)

    def _slab_batch(self, depth: int, plane: Sequence[int], resident: int, slabs: int) -> int:
        """The largest batch up to :data:`SLAB_BATCH` whose whole-slab tiles fit the budget
        (a batch split into in-plane tiles would pay their halos instead)."""
        for batch in range(min(SLAB_BATCH, slabs), 1, -1):
            try:
                cells = self.plan((depth, *plane), resident, batch)
            except BlcamError:
                continue
            if cells[0] >= depth * math.prod(plane):
                return batch
        return 1

    def __call__(self, stored_uint8: np.ndarray, progress: bool = False,
                 on_step: StepCallback | None = None) -> LesionMap:
        """The lesion map of one volume (stored uint8 units, as :func:`normalise_volume` gives)."""
        offset = list(feature_offset(self.stride))
        stride: Int3 = self.stride
        window: list[tuple[int, int]] | None = None
        if self.context == "slab":
            logit = self._slab_grid(stored_uint8, progress, on_step)
            stride = (self.slab_step, *self.stride[1:])
            offset[0] = (min(self.crop[0], stored_uint8.shape[0]) - 1) / 2
            window = [(0, 0)] + crop_window(self.crop, self.stride)[1:]
        else:
            logit = self.logit_grid(stored_uint8, progress, on_step)
        return lesion_map(logit, self.bias, stride, self.crop, stored_uint8.shape, float3(offset), window)
