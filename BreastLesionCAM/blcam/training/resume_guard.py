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
