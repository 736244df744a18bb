"""The review loop's data side: places a radiologist rejected become negative patches.

The cohort's optional ``negatives`` column names a points file per volume; export cuts a
label-0 patch (kind ``reviewed``) at each point, moved inside the volume, from healthy and
lesion volumes alike, and leaves out one whose patch would hold a lesion of the same volume.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from _training_fixtures import write_blob_cohort
from blcam.cohort import read_cohort
from blcam.errors import BlcamError
from blcam.io.volume import read_geometry
from blcam.patches.dataset import load_dataset
from blcam.patches.export import ExportSettings, export_dataset

SETTINGS = ExportSettings(patch=(8, 24, 24), negatives_per_volume=1, folds=2)


def _add_negatives(cohort: Path, points_by_patient: dict[str, list]) -> None:
    """Write a points CSV (voxel k j i → LPS) per patient and a ``negatives`` column."""
    rows = list(csv.DictReader(cohort.open(encoding="utf-8")))
    for r in rows:
        r["negatives"] = ""
        if r["patient"] in points_by_patient:
            geometry = read_geometry(cohort.parent / r["volume"])
            lps = geometry.index_to_lps(np.asarray(points_by_patient[r["patient"]], float)[:, ::-1])
            name = f"{r['patient']}_rejected.csv"
            with (cohort.parent / name).open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([["x", "y", "z"], *lps.tolist()])
            r["negatives"] = name
    with cohort.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_reviewed_negatives_become_label_0_patches_at_the_rejected_places(tmp_path, capsys, monkeypatch):
    import blcam.patches.export as export_module
    reads: list[str] = []
    real_read = export_module.read_volume
    monkeypatch.setattr(export_module, "read_volume", lambda path: reads.append(Path(path).name) or real_read(path))
    cohort = write_blob_cohort(tmp_path / "cohort", patients=6)         # P00, P02, P04 lesion (20×80×80)
    lesion_centre = np.rint(read_geometry(tmp_path / "cohort" / "P00.nrrd").lps_to_index(
        read_cohort(cohort).rows[0].centres_lps)[0][::-1]).astype(int)
    # P01 (healthy): one point well inside, one at the volume's corner (moved inside);
    # P00 (lesion): one far from its lesions' patches... and one on a lesion (left out).
    _add_negatives(cohort, {"P01": [(10, 40, 40), (0, 0, 79)], "P00": [(10, 70, 76), tuple(lesion_centre)]})
    progress: list[tuple[int, int]] = []
    export_dataset(cohort, tmp_path / "p", SETTINGS, progress=False, on_progress=lambda *a: progress.append(a))
    assert "reviewed negative 2 of 'P00.nrrd' is left out" in capsys.readouterr().err
    # Each volume is read once, its lesion (or random negative) and reviewed patches together,
    # and the progress counts volumes.
    assert sorted(reads) == sorted(f"P{n:02d}.nrrd" for n in range(6))
    assert progress[-1] == (6, 6)
    ds = load_dataset(tmp_path / "p")
    reviewed = sorted((r for r in ds.records if r["kind"] == "reviewed"), key=lambda r: r["patch_id"])
    assert [r["patch_id"] for r in reviewed] == ["P00_P00_rev01", "P01_P01_rev01", "P01_P01_rev02"]
    assert all(r["label"] == 0 and float(r["padded_fraction"]) == 0.0 for r in reviewed)
    centres = {r["patch_id"]: (r["centre_k"], r["centre_j"], r["centre_i"]) for r in reviewed}
    assert centres["P01_P01_rev01"] == (10, 40, 40)
    assert centres["P01_P01_rev02"] == (4, 12, 68)      # the corner point, moved inside (box 56..79)
    # The patch holds the volume's grey values at that place: the same voxels as the volume.
    from blcam.io.volume import read_volume
    volume, _ = read_volume(tmp_path / "cohort" / "P01.nrrd")
    patch = np.load(tmp_path / "p" / next(r["file"] for r in reviewed if r["patch_id"] == "P01_P01_rev01"))
    np.testing.assert_array_equal(patch, volume[6:14, 28:52, 28:52])
    # Patient splits are unchanged by the extra rows: each patient's patches share one split.
    splits = {}
    for r in ds.records:
        splits.setdefault(r["patient"], set()).add((r["split"], r["fold"]))
    assert all(len(v) == 1 for v in splits.values())


def test_a_rejected_point_outside_its_volume_names_the_row_and_the_file(tmp_path):
    cohort = write_blob_cohort(tmp_path / "cohort", patients=4)
    _add_negatives(cohort, {"P01": [(10, 40, 200)]})
    with pytest.raises(BlcamError, match=r"row 3: reviewed negative 1 .* outside .*P01_rejected.csv"):
        read_cohort(cohort)
