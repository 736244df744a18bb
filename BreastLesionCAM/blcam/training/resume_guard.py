"""Which dataset a run trains on, recorded in ``last.pt`` so ``--resume`` cannot switch it.

Resuming onto another export would continue one history (and one best-model choice) over
two datasets. The identity is a SHA-256 of ``dataset.json`` and ``manifest.csv``: the
files that define which patches exist, their labels and splits; the patches themselves
are not hashed (gigabytes) but are named by the manifest and never rewritten by a resumed
export. A dataset that is moved or copied keeps its identity; the resolved path is kept
only to name it in messages. The record is plain strings, so the checkpoint still loads
with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ..axes import PathLike
from ..errors import BlcamError
from .checkpoint import load_checkpoint
from .config import TrainConfig

IDENTITY_FILES = ("dataset.json", "manifest.csv")


def dataset_identity(root: PathLike) -> dict:
    """``{"sha256": ..., "path": ...}`` of the dataset folder ``root``."""
    root = Path(root)
    digest = hashlib.sha256()
    for name in IDENTITY_FILES:
        data = (root / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return {"sha256": digest.hexdigest(), "path": str(root.resolve())}


def check_same_dataset(saved: dict | None, current: dict, checkpoint: Path, warn: bool = True) -> None:
    """Refuse to resume ``checkpoint`` on another dataset than it was trained on.

    Checkpoints written before the identity was recorded carry none: they resume, with a
    warning (on stderr) that the dataset could not be checked.
    """
    if not saved:
        if warn:
            print(f"blcam: warning: {checkpoint} does not record its dataset (written by an older blcam); "
                  f"resuming on {current['path']} unchecked", file=sys.stderr)
        return
    if saved.get("sha256") != current["sha256"]:
        raise BlcamError(f"{checkpoint}: the run was trained on the dataset {saved.get('path')} "
                         f"(sha256 {str(saved.get('sha256'))[:12]}), not on {current['path']} "
                         f"(sha256 {current['sha256'][:12]}); resume with that dataset, or train into another --out")


def recipe_mismatch(saved: dict, config: TrainConfig) -> str:
    """The recipe fields in which ``config`` departs from a checkpoint's saved config, as
    ``"field: old → new, ..."`` (empty when the run may be continued with ``config``)."""
    old = TrainConfig.from_dict(saved)
    was, now = old.to_dict(), config.to_dict()
    return ", ".join(f"{k}: {was[k]} → {now[k]}" for k in config.recipe_differences(old))


def warn_schedule_change(saved: dict, config: TrainConfig, last_epoch: int, checkpoint: Path,
                         warn: bool = True) -> str:
    """Warn (on stderr) when ``--resume --epochs N`` re-lays a cosine learning rate.

    The cosine rate is a function of the epoch *and* the planned number of epochs, so a run
    extended on resume does not continue the curve it was on: its next epoch jumps back up to
    the rate the new length gives (and the result differs from a run started with that
    length). Allowed, since extending a run is what ``--epochs`` on resume is for, but never
    silently. Returns the warning (empty when there is none)."""
    old = TrainConfig.from_dict(saved)
    if config.lr_schedule != "cosine" or old.epochs == config.epochs or last_epoch >= config.epochs:
        return ""
    nxt = last_epoch + 1
    text = (f"{checkpoint}: the cosine learning rate was laid out over {old.epochs} epochs and is now laid out "
            f"over {config.epochs}: epoch {nxt} trains at lr {config.epoch_lr(nxt):.3g}, after "
            f"{old.epoch_lr(last_epoch):.3g} at epoch {last_epoch}, so the result will differ from a run "
            f"started with --epochs {config.epochs}")
    if warn:
        print(f"blcam: warning: {text}", file=sys.stderr)
    return text


def resume_problem(checkpoint: PathLike, dataset_root: PathLike, config: TrainConfig) -> str:
    """Why the run whose ``last.pt`` is ``checkpoint`` cannot be continued with ``config`` on
    ``dataset_root`` by one process, as the same run; empty when it can. For callers that
    decide between resuming and starting afresh (the demo), before any training starts.

    Stricter than ``--resume``: the number of epochs must match too, since the learning-rate
    schedule (cosine) is laid out over it, so a run extended later is not the run a fresh
    start with the new number would give."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return f"no {checkpoint}"
    try:
        state = load_checkpoint(checkpoint)
    except BlcamError as exc:
        return str(exc)
    changed = recipe_mismatch(state["config"], config)
    if changed:
        return f"a different recipe ({changed})"
    saved = state.get("dataset") or {}
    if saved.get("sha256") != dataset_identity(dataset_root)["sha256"]:
        return "another dataset (a new export)"
    if int(state["config"].get("epochs", -1)) != config.epochs:
        return f"{state['config'].get('epochs')} epochs planned, not {config.epochs}"
    if state.get("world_size") != 1:
        return f"{state.get('world_size')} processes, not 1"
    return ""
