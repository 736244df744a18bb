"""The network (MONAI's 3D ResNet, one logit) and the model file that carries it.

A model file is ``safetensors`` weights plus a JSON metadata record in the file header
(architecture, stem, width, crop and patch size, intensity normalisation, training config,
package version). Loading never unpickles anything, so a model file from a stranger cannot
run code; and everything needed to rebuild the network comes from the record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict, Union

import torch
from monai.networks.nets import ResNet
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .axes import Float3, Int3, Ints, PathLike, float3, int3
from .errors import BlcamError
from .intensity import NORMALISATION
from .io.atomic import atomic_path
from .score_calibration import check_block


class HasStateDict(Protocol):
    """A network, or anything else that hands over its weights (:func:`save_model`)."""

    def state_dict(self) -> dict[str, Any]: ...


class Stem(TypedDict):
    """MONAI ResNet keyword arguments of a stem (its first convolution)."""

    conv1_t_size: int
    conv1_t_stride: int | Int3


ARCHS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2]}
# 'paper': MONAI's default stem, full-resolution 7×7×7 conv (finest CAM, slowest).
# 'fast': the common 3D-ResNet stem that halves in-plane resolution first (~3× faster training).
# 'compact': a 3×3×3 full-resolution stem: the paper stem's map resolution, but its first
# convolution, 43 % of a CPU training step with 7×7×7, costs 27/343 of that.
STEMS: dict[str, Stem] = {"paper": {"conv1_t_size": 7, "conv1_t_stride": 1},
                          "fast": {"conv1_t_size": 7, "conv1_t_stride": (1, 2, 2)},
                          "compact": {"conv1_t_size": 3, "conv1_t_stride": 1}}
# Input voxels per feature voxel of the last block with the paper stem: 16 is MONAI's
# network; 8 keeps layer4 at layer3's resolution (no stride, dilated as DeepLab does), a
# lesion map twice as fine along every axis for ~25 % more compute (:func:`build_model`).
OUTPUT_STRIDES = (16, 8)
FORMAT = "blcam-model-v1"
MODEL_FILE = "model.safetensors"    # the model file in a run folder
MAX_WIDEN = 8.0     # widen 8 is already ~64× the paper's weights; more is a tampered file, not a model
MAX_MEMBERS = 16    # networks in one ensemble file (blcam.ensemble); more is a tampered file


def build_model(arch: str = "resnet10", stem: str = "paper", widen: float = 1.0,
                output_stride: int = 16) -> ResNet:
    """A 3D ResNet-10/18 with one input channel and one output logit (sigmoid at inference).

    ``output_stride=8`` removes layer4's stride (first block's 3×3×3 conv and shortcut) and
    dilates layer4's later 3×3×3 convolutions by 2, so they still reach as far in the image
    as before: the weights and the classifier are unchanged in kind, only the map is finer.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise BlcamError(f"output stride {output_stride}: choose one of {', '.join(map(str, OUTPUT_STRIDES))}")
    if arch not in ARCHS:
        raise BlcamError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHS)}")
    if stem not in STEMS:
        raise BlcamError(f"unknown stem '{stem}'; choose one of {', '.join(STEMS)}")
    if not 0 < widen <= MAX_WIDEN:
        raise BlcamError(f"width factor must be in (0, {MAX_WIDEN:g}], got {widen}")
    # MONAI annotates conv1_t_stride as ``tuple[int] | int``; it takes one stride per axis.
    net = ResNet(block="basic", layers=ARCHS[arch], block_inplanes=[64, 128, 256, 512], spatial_dims=3,
                 n_input_channels=1, num_classes=1, widen_factor=widen, **STEMS[stem])  # type: ignore[arg-type]
    if output_stride == 8:
        _undo_last_stride(net.layer4)
    return net


def _undo_last_stride(layer: torch.nn.Sequential) -> None:
    blocks: list[Any] = list(layer)   # MONAI ResNetBlocks: their layers come from untyped factories
    first = blocks[0]
    first.conv1.stride = (1, 1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1, 1)
    convs = [first.conv2] + [c for block in blocks[1:] for c in (block.conv1, block.conv2)]
    for conv in convs:
        conv.dilation, conv.padding = (2, 2, 2), (2, 2, 2)


class Ensemble(torch.nn.Module):
    """Networks trained alike (one architecture, crop and spacing) answering as one: the mean
    of their logits (:mod:`blcam.ensemble` says why and how a file of them is made).

    The mean of *logits*, not of probabilities: a network's logit is the mean of its local
    logits (global average pooling, then one linear unit), so the ensemble's crop logit is
    exactly the crop mean of the members' mean local-logit map, which is what Detect maps
    (:class:`blcam.cam.mean_map.MeanMapper`) and what refinement asks.
    """

    def __init__(self, members: Sequence[ResNet]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


Network = Union[ResNet, Ensemble]      # what a model file holds (load_model)


def ensemble_size(meta: dict) -> int:
    """Networks in a model file: its ``ensemble`` block's ``members``, 1 without one."""
    block = meta.get("ensemble")
    return 1 if block is None else int(block["members"])


def total_stride(stem: str, output_stride: int = 16) -> tuple[int, int, int]:
    """Input voxels per feature-map voxel of the last block (k, j, i)."""
    s = STEMS[stem]["conv1_t_stride"]
    s = (s, s, s) if isinstance(s, int) else s
    return int3(output_stride * v for v in s)  # max-pool and layers 2–4 (16, or 8 without layer4's), × the stem


def model_stride(meta: dict) -> tuple[int, int, int]:
    """:func:`total_stride` of a model file's metadata (files without ``output_stride``: 16)."""
    return total_stride(meta["stem"], int(meta.get("output_stride", 16)))


def make_metadata(arch: str, stem: str, widen: float, crop: Ints, patch: Ints, training: dict | None = None,
                  **extra: Any) -> dict:
    """The metadata record every model file carries: architecture, stem, width, crop and
    patch, normalisation, spacing and the training config, enough to rebuild and use the
    network without the run folder (README "Training and the paper's Table 2")."""
    meta = {"format": FORMAT, "blcam_version": __version__, "arch": arch, "stem": stem, "widen": widen,
            "crop": [int(v) for v in crop], "patch": [int(v) for v in patch], "axes": "k,j,i",
            "normalisation": NORMALISATION, "spacing": None, "training": training or {}}
    meta.update(extra)
    return meta


def save_model(path: PathLike, model: HasStateDict, metadata: dict) -> None:
    """Write weights + metadata as one safetensors file, atomically."""
    save_state(path, {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()},
               metadata)


def save_state(path: PathLike, state: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write CPU tensors + the metadata record as one safetensors file, atomically."""
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"blcam": json.dumps(metadata)})


def replace_metadata(path: PathLike, metadata: dict, out: PathLike | None = None) -> Path:
    """Write ``path``'s weights, unchanged and in their own dtypes, with a new metadata record to
    ``out`` (default: ``path`` itself), atomically; returns where. ``blcam calibrate`` uses it."""
    check_metadata(path, metadata)
    state = load_file(str(path), device="cpu")
    target = Path(out) if out is not None else Path(path)
    save_state(target, state, metadata)
    return target


def read_metadata(path: PathLike) -> dict:
    """The metadata record of a model file, without loading weights."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise BlcamError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = (fh.metadata() or {}).get("blcam")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BlcamError(f"{path}: not a BreastLesionCAM model file ({exc})") from None
    if meta is None:
        raise BlcamError(f"{path}: safetensors file without BreastLesionCAM metadata")
    try:
        meta = json.loads(meta)
    except ValueError as exc:
        raise BlcamError(f"{path}: model metadata is not JSON ({exc})") from None
    check_metadata(path, meta)
    return meta


def check_metadata(path: PathLike, meta: object) -> None:
    """Validate the record *before* a network is built from it: a tampered or corrupt file
    must not make us allocate 88 GB (``widen: 1e6``) or fail deep inside MONAI."""
    if not isinstance(meta, dict):
        raise BlcamError(f"{path}: model metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise BlcamError(f"{path}: unsupported model format '{meta.get('format')}'")
    for key, allowed in (("arch", ARCHS), ("stem", STEMS)):
        if meta.get(key) not in allowed:
            raise BlcamError(f"{path}: model metadata '{key}' is {meta.get(key)!r}; "
                             f"expected one of {', '.join(allowed)}")
    widen = meta.get("widen")
    if isinstance(widen, bool) or not isinstance(widen, (int, float)) or not 0 < widen <= MAX_WIDEN:
        raise BlcamError(f"{path}: model metadata 'widen' is {widen!r}; expected a number in (0, {MAX_WIDEN:g}]")
    for key in ("crop", "patch"):
        size = meta.get(key)
        if not (isinstance(size, list) and len(size) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise BlcamError(f"{path}: model metadata '{key}' is {size!r}; expected three positive integers (k j i)")
    spacing = meta.get("spacing")
    if spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in spacing)):
        raise BlcamError(f"{path}: model metadata 'spacing' is {spacing!r}; expected null (the volumes' own "
                         "voxels) or three positive sizes in mm (i j k)")
    if meta.get("output_stride", 16) not in OUTPUT_STRIDES:
        raise BlcamError(f"{path}: model metadata 'output_stride' is {meta.get('output_stride')!r}; "
                         f"expected one of {', '.join(map(str, OUTPUT_STRIDES))}")
    if meta.get("calibration") is not None:
        check_block(meta["calibration"], str(path))
    block = meta.get("ensemble")
    if block is not None:
        members = block.get("members") if isinstance(block, dict) else None
        if isinstance(members, bool) or not isinstance(members, int) or not 2 <= members <= MAX_MEMBERS:
            raise BlcamError(f"{path}: model metadata 'ensemble' has members {members!r}; expected an integer "
                             f"from 2 to {MAX_MEMBERS}")


def model_spacing(meta: dict) -> Float3 | None:
    """The voxel size (mm, ``i, j, k``) the model was trained at; None: each volume's own
    voxels (exports without ``--spacing``, and every model from before spacings existed)."""
    spacing = meta.get("spacing")
    return None if spacing is None else float3(spacing)


def load_model(path: PathLike, device: str | torch.device = "cpu") -> tuple[Network, dict]:
    """Rebuild the network from a model file; returns ``(model in eval mode, metadata)``.

    An ensemble file (metadata ``ensemble``) gives an :class:`Ensemble` of its members."""
    meta = read_metadata(path)

    def one() -> ResNet:
        return build_model(meta["arch"], meta["stem"], meta["widen"], int(meta.get("output_stride", 16)))
    n = ensemble_size(meta)
    model: Network = one() if n == 1 else Ensemble([one() for _ in range(n)])
    what = f"{meta['arch']}/{meta['stem']}" + ("" if n == 1 else f" × {n}")
    try:
        model.load_state_dict(load_file(str(path), device="cpu"))
    except (RuntimeError, SafetensorError) as exc:
        raise BlcamError(f"{path}: weights do not match {what} ({exc})") from None
    return model.to(device).eval(), meta


def resolve_model_path(run_or_model: PathLike) -> Path:
    """A run folder (→ its ``model.safetensors``) or a model file."""
    path = Path(run_or_model)
    if path.is_dir():
        path = path / MODEL_FILE
        if not path.is_file():
            raise BlcamError(f"{run_or_model}: run folder has no {MODEL_FILE} (training not started or failed)")
    elif not path.is_file():
        raise BlcamError(f"{path}: no such run folder or model file")
    return path


def _unwrap(model: HasStateDict) -> HasStateDict:
    """The bare network inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
