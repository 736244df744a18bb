"""The files ``blcam detect`` leaves per volume, and the cohort summary.

Per volume ``<name>``: ``_heatmap.nrrd`` (float32 in [0, 1] in steps of 1/255, the input's exact size,
spacing, origin and direction), ``_candidates.mrk.json`` (Slicer ``Fiducial`` markups in
LPS, labels ``lesion-N``, the score in each description), ``_candidates.csv`` and
``_candidates.json`` (score, LPS position, voxel index, size in mm). ``detections.csv``
lists every volume with its volume-level score. Every file is written atomically.

This module is the output contract: :class:`VolumeOutputs` is the one place the file names
are spelled, :data:`CANDIDATE_COLUMNS`/:data:`SUMMARY_COLUMNS` the columns, and readers (the
Slicer module, evaluation, the demo report) take both from here. It imports without torch.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..axes import PathLike
from ..io.atomic import write_csv_atomic, write_json_atomic
from ..io.points import write_markups
from ..io.volume import Geometry, write_volume

if TYPE_CHECKING:                 # importable without torch (the Slicer side reads this contract)
    from .candidates import Candidate

HEATMAP_LEVELS = 255
SUMMARY_FILE = "detections.csv"
HEATMAP_SUFFIX = "_heatmap.nrrd"


@dataclass(frozen=True)
class VolumeOutputs:
    """The files ``blcam detect`` writes for the volume called ``name`` into ``folder``."""

    folder: Path
    name: str

    def _file(self, suffix: str) -> Path:
        return Path(self.folder) / f"{self.name}{suffix}"

    @property
    def heatmap(self) -> Path:
        return self._file(HEATMAP_SUFFIX)

    @property
    def markups(self) -> Path:
        return self._file("_candidates.mrk.json")

    @property
    def csv(self) -> Path:
        return self._file("_candidates.csv")

    @property
    def json(self) -> Path:
        return self._file("_candidates.json")

    @property
    def contact(self) -> Path:
        return self._file("_contact.png")

    @property
    def done(self) -> Path:
        return self._file("_done.json")

    def overlay(self, n: int) -> Path:
        return self._file(f"_overlay_lesion-{n}.png")

    def pictures(self) -> list[Path]:
        """The volume's overlay PNGs and contact sheet that exist now (never another volume's)."""
        prefix = f"{self.name}_overlay_lesion-"
        overlays = [p for p in Path(self.folder).glob(f"{glob.escape(prefix)}*.png")
                    if p.name[len(prefix):-len(".png")].isdigit()]
        return sorted(p for p in [*overlays, self.contact] if p.is_file())

    def remove_pictures(self) -> None:
        """Remove the volume's pictures: an earlier run's no longer show the heatmap beside them."""
        for path in self.pictures():
            path.unlink()

    @classmethod
    def names_in(cls, folder: PathLike) -> list[str]:
        """The names of the volumes whose heatmap is in ``folder``."""
        return sorted(p.name[: -len(HEATMAP_SUFFIX)] for p in Path(folder).glob(f"*{HEATMAP_SUFFIX}"))


def write_heatmap(path: PathLike, heat: np.ndarray, geometry: Geometry) -> None:
    """Write the [0, 1] heatmap in steps of 1/255, in place.

    The heatmap is for display through a 256-colour table, so finer steps show nothing; a
    float32 heatmap of an ABUS volume (209 M voxels) with every mantissa bit in use is
    700 MB and takes 12 s to compress, with 256 levels 150 MB and 3 s (bench/RESULTS.md).
    Candidates come from the lesion map itself, never from this file.
    """
    np.multiply(heat, HEATMAP_LEVELS, out=heat)
    np.rint(heat, out=heat)
    heat /= HEATMAP_LEVELS
    write_volume(path, heat, geometry)


CANDIDATE_COLUMNS = ["label", "score", "crop_logit", "local_logit", "x", "y", "z", "i", "j", "k",
                     "size_i_mm", "size_j_mm", "size_k_mm"]
SUMMARY_COLUMNS = ["name", "volume", "patient", "label", "volume_score", "candidates", "method",
                   "seconds", "map_seconds", "refine_seconds", "snap_seconds", "pictures_seconds",
                   "resample_seconds", "heatmap", "candidates_json", "non_finite_voxels"]


def candidate_rows(candidates: list[Candidate]) -> list[dict]:
    """One flat record per candidate (CSV/JSON columns)."""
    rows = []
    for n, c in enumerate(candidates, 1):
        i, j, k = c.voxel_ijk
        rows.append({"label": f"lesion-{n}", "score": round(c.score, 6), "crop_logit": round(c.crop_logit, 5),
                     "local_logit": round(c.local_logit, 5), "x": round(c.lps[0], 4), "y": round(c.lps[1], 4),
                     "z": round(c.lps[2], 4), "i": i, "j": j, "k": k,
                     "size_i_mm": round(c.size_mm_ijk[0], 3), "size_j_mm": round(c.size_mm_ijk[1], 3),
                     "size_k_mm": round(c.size_mm_ijk[2], 3)})
    return rows


def write_candidates(out_dir: Path, name: str, candidates: list[Candidate], info: dict) -> dict[str, Path]:
    """Write the markups, CSV and JSON of one volume's candidates; returns their paths."""
    rows = candidate_rows(candidates)
    files = VolumeOutputs(out_dir, name)
    paths = {"markups": files.markups, "csv": files.csv, "json": files.json}
    write_markups(paths["markups"], [c.lps for c in candidates], [r["label"] for r in rows],
                  [f"score={r['score']:.3f}; size (i,j,k) {r['size_i_mm']:.1f}×{r['size_j_mm']:.1f}×"
                   f"{r['size_k_mm']:.1f} mm" for r in rows])
    write_csv_atomic(paths["csv"], rows, CANDIDATE_COLUMNS, ignore_extra=True)
    write_json_atomic(paths["json"], {**info, "candidates": rows})
    return paths


def write_summary(out_dir: Path, rows: list[dict]) -> Path:
    """``detections.csv``: one row per volume (name, volume path, volume score, files)."""
    path = Path(out_dir) / SUMMARY_FILE
    write_csv_atomic(path, rows, SUMMARY_COLUMNS, ignore_extra=True)
    return path
