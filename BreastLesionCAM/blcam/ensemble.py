"""``blcam ensemble``: several model files trained alike, written as one model file.

Why: the demo's recipe, trained on the same data on two CPUs (whose convolution kernels
round differently), pointed at 0.708 and 0.542 of the same 24 lesions, so what a model points
at could depend on its training run. Averaging networks trained with different seeds, or on
different folds (``blcam cv``'s fold models, as nnU-Net does), keeps what they agree on and
averages away what is particular to one of them. On the phantom it did not help: two seeds
missed the same lesions (volume logits correlated at 0.97) and their ensemble pointed like
the weaker one (``bench/RESULTS.md``, "Ensembles"), so it is an option, not the default.

The members must be interchangeable for Detect: the same architecture, stem, width, output
stride, crop, patch, voxel size and grey-level normalisation, and the same refinement
(point supervision or not, crops inside the volume or not). The file stores each member's
weights under ``members.N.`` and the first member's metadata record, plus an ``ensemble``
block (how many, where from, each member's training config). Detect, ``calibrate``,
``evaluate`` and the Slicer module take it like any model file; the members' own score
calibration is dropped, since the mean of several logits is not any member's logit: run
``blcam calibrate`` on the ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file

from .axes import PathLike
from .errors import BlcamError
from .model import MAX_MEMBERS, ensemble_size, read_metadata, resolve_model_path, save_state

# Metadata fields every member must share for one lesion map to average theirs.
SHARED = ("arch", "stem", "widen", "output_stride", "crop", "patch", "spacing", "normalisation", "axes")
# Training fields that decide how Detect refines (refine.default_mode, refine.trained_inside).
SHARED_TRAINING = ("point_loss", "padded_crops")


def _training_value(meta: dict, key: str) -> object:
    value = meta.get("training", {}).get(key)
    return (float(value or 0) > 0) if key == "point_loss" else value


def check_members(paths: Sequence[Path], metas: Sequence[dict]) -> None:
    """Refuse members that Detect could not average, naming the file and the field."""
    if not 2 <= len(paths) <= MAX_MEMBERS:
        raise BlcamError(f"an ensemble needs 2 to {MAX_MEMBERS} model files, got {len(paths)}")
    seen: dict[Path, int] = {}
    for n, (path, meta) in enumerate(zip(paths, metas)):
        if path.resolve() in seen:
            raise BlcamError(f"{path}: given twice (members {seen[path.resolve()] + 1} and {n + 1}); an ensemble of "
                             "a model with itself is that model")
        seen[path.resolve()] = n
        if ensemble_size(meta) > 1:
            raise BlcamError(f"{path}: is an ensemble already; give its members instead")
    first, first_meta = paths[0], metas[0]
    for path, meta in zip(paths[1:], metas[1:]):
        for key in SHARED:
            default = 16 if key == "output_stride" else None      # files from before output strides
            if meta.get(key, default) != first_meta.get(key, default):
                raise BlcamError(f"{path}: '{key}' is {meta.get(key)!r} but {first} has {first_meta.get(key)!r}; "
                                 "ensemble members must be trained alike")
        for key in SHARED_TRAINING:
            if _training_value(meta, key) != _training_value(first_meta, key):
                mine, theirs = meta.get("training", {}).get(key), first_meta.get("training", {}).get(key)
                raise BlcamError(f"{path}: training '{key}' is {mine!r} but {first} has {theirs!r}; Detect refines "
                                 "all members' candidates one way")


def write_ensemble(models: Sequence[PathLike], out: PathLike, replace: bool = False) -> Path:
    """Write the members' weights and a shared metadata record to ``out`` (atomically); returns it.
    An existing ``out`` is refused unless ``replace``."""
    paths = [resolve_model_path(m) for m in models]
    out = Path(out)
    if out.suffix != ".safetensors":
        raise BlcamError(f"--out {out}: give a .safetensors path")
    if any(out.resolve() == p.resolve() for p in paths):
        raise BlcamError(f"--out {out}: is one of the members; write the ensemble to a new file")
    if out.exists() and not replace:
        raise BlcamError(f"--out {out}: exists; choose a new file, or pass --force to replace it")
    metas = [read_metadata(p) for p in paths]
    check_members(paths, metas)
    state = {}
    for n, path in enumerate(paths):
        state.update({f"members.{n}.{k}": v for k, v in load_file(str(path), device="cpu").items()})
    meta = {k: v for k, v in metas[0].items() if k != "calibration"}
    meta["ensemble"] = {"members": len(paths), "sources": [str(p) for p in paths],
                        "training": [m.get("training", {}) for m in metas]}
    save_state(out, state, meta)
    return out
