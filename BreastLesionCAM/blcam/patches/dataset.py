"""Reading an exported patch dataset: ``dataset.json`` + ``manifest.csv`` + ``patches/*.npy``.

Patches are stored in their volume's grey values and memory-mapped, so a dataset far larger
than RAM can be trained on and a random crop touches only the pages it needs; the fixed
normalisation is applied on reading, from the grey range each manifest row carries.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..axes import Float3, Int3, PathLike, float3, int3
from ..errors import BlcamError
from ..intensity import to_uint8
from .extract import inside_part

_INT_COLUMNS = ("label", "row", "fold", "centre_k", "centre_j", "centre_i", "start_k", "start_j", "start_i")
_FLOAT_COLUMNS = ("x", "y", "z", "padded_fraction", "grey_low", "grey_high")
_NPY_HEADER_LOCK = threading.Lock()
_SHAPE_COLUMNS = ("volume_k", "volume_j", "volume_i")   # absent in older exports: valid box unknown


@dataclass
class PatchDataset:
    """An exported dataset: its metadata and one dict per patch (typed columns)."""

    root: Path
    info: dict
    records: list[dict]

    @property
    def patch_size(self) -> Int3:
        return int3(self.info["settings"]["patch"])

    @property
    def spacing(self) -> Float3 | None:
        """The voxel size (mm, ``i, j, k``) the patches were resampled to; None: each
        volume's own (exports without ``--spacing``, and all exports from before it)."""
        spacing = self.info["settings"].get("spacing")
        return None if spacing is None else float3(spacing)

    def select(self, split: str | None = None, folds: Iterable[int] | None = None,
               exclude_folds: Iterable[int] | None = None) -> list[dict]:
        """Records of one split and/or of (or outside) some folds."""
        out = self.records
        if split is not None:
            out = [r for r in out if r["split"] == split]
        if folds is not None:
            out = [r for r in out if r["fold"] in set(folds)]
        if exclude_folds is not None:
            out = [r for r in out if r["fold"] not in set(exclude_folds)]
        return out

    def valid_box(self, record: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)``: the part of the patch that lies inside its volume, in patch voxels
        ``(k, j, i)``; the rest is padding. Whole patch for exports that predate the
        ``volume_*`` columns (unknown)."""
        patch = np.asarray(self.patch_size, int)
        if record.get("volume_k") is None:
            return np.zeros(3, int), patch
        start = [record["start_k"], record["start_j"], record["start_i"]]
        return inside_part(start, patch, [record[c] for c in _SHAPE_COLUMNS])

    def path_of(self, record: dict) -> Path:
        return self.root / record["file"]

    def load_raw(self, record: dict, mmap: bool = True) -> np.ndarray:
        """The stored patch ``(k, j, i)`` in the volume's grey values (memory-mapped by default).

        Safe from several threads (training loads patches on a thread pool): ``np.load``
        parses the ``.npy`` header with ``ast.literal_eval``, and CPython 3.11 before 3.11.8
        can fail with "AST constructor recursion depth mismatch" when two threads parse at
        once (CPython gh-106905; seen in CI). Headers are therefore parsed one at a time, and
        the data, the slow part, are read outside the lock.
        """
        path = self.path_of(record)
        try:
            if mmap:
                with _NPY_HEADER_LOCK:
                    return np.load(path, mmap_mode="r", allow_pickle=False)
            with open(path, "rb") as fh:
                with _NPY_HEADER_LOCK:
                    version = np.lib.format.read_magic(fh)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(fh)
                if dtype.hasobject:
                    raise ValueError("object arrays are not patches")
                count = int(np.prod(shape))
                data = np.fromfile(fh, dtype=dtype, count=count)
                if data.size != count:
                    raise ValueError(f"file holds {data.size} of its {count} values")
                return data.reshape(shape, order="F" if fortran else "C")
        except (OSError, ValueError) as exc:
            raise BlcamError(f"{path}: cannot read patch ({exc})") from None

    @staticmethod
    def normalise(record: dict, values: np.ndarray) -> np.ndarray:
        """Grey values of (part of) a patch → the fixed uint8 scale (:mod:`blcam.intensity`).

        Cropping before normalising is cheaper: ``normalise(rec, load_raw(rec)[crop])``.
        """
        return to_uint8(np.asarray(values), record["grey_low"], record["grey_high"])

    def load(self, record: dict, mmap: bool = True) -> np.ndarray:
        """The whole patch normalised to uint8 ``(k, j, i)``: what the network sees, before scaling."""
        return self.normalise(record, self.load_raw(record, mmap))


def load_dataset(root: PathLike) -> PatchDataset:
    """Open a dataset folder written by ``blcam export``; errors name the missing piece."""
    root = Path(root)
    meta, manifest = root / "dataset.json", root / "manifest.csv"
    if not meta.is_file():
        raise BlcamError(f"{root}: not a patch dataset (no dataset.json); run 'blcam export' first")
    if not manifest.is_file():
        raise BlcamError(f"{root}: export did not finish (no manifest.csv); rerun 'blcam export' to resume")
    info = json.loads(meta.read_text(encoding="utf-8"))
    records = read_manifest(manifest)
    if not records:
        raise BlcamError(f"{manifest}: no patches")
    return PatchDataset(root, info, records)


def read_manifest(manifest: Path) -> list[dict]:
    """The typed rows of a ``manifest.csv`` (an export's, or a run's mined hard negatives)."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        records = []
        for row_no, rec in enumerate(csv.DictReader(fh), 2):
            try:
                for c in _INT_COLUMNS:
                    rec[c] = int(rec[c])
                for c in _FLOAT_COLUMNS:
                    rec[c] = float(rec[c])
                for c in _SHAPE_COLUMNS:
                    rec[c] = int(rec[c]) if rec.get(c) not in (None, "") else None
            except (KeyError, ValueError) as exc:
                raise BlcamError(f"{manifest} row {row_no}: bad value ({exc})") from None
            records.append(rec)
    return records
