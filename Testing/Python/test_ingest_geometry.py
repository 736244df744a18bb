"""Geometry: annotated physical points → exported patch centres, whatever the direction/origin.

The reference is SimpleITK's own ``TransformPhysicalPointToContinuousIndex`` (not our code),
for flipped, rotated, oblique and left-handed volumes, with LPS and RAS markups alike.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import uniform_filter

from _cohort_fixtures import DIRECTIONS, write_case, write_cohort_csv
from blcam.io.points import read_points
from blcam.patches.dataset import load_dataset
from blcam.patches.export import ExportSettings, export_dataset

PATCH = (7, 16, 16)


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_patch_centre_matches_annotated_point(tmp_path, system):
    rows = []
    centres = {}
    for n, direction in enumerate(DIRECTIONS):
        c = [(5, 9, 30), (14, 30, 6)]
        vol, ann, pts = write_case(tmp_path, f"L{n}", (20, 40, 36), c, direction, seed=n, coordinate_system=system)
        rows.append((f"L{n}", vol, "lesion", ann))
        centres[vol] = pts
        rows.append((f"H{n}", write_case(tmp_path, f"H{n}", (20, 40, 36), (), direction, seed=50 + n)[0], "healthy", ""))
    write_cohort_csv(tmp_path / "cohort.csv", rows)
    export_dataset(tmp_path / "cohort.csv", tmp_path / "ds", ExportSettings(patch=PATCH, negatives_per_volume=1,
                   test_fraction=0.0, folds=2), progress=False)
    ds = load_dataset(tmp_path / "ds")
    positives = [r for r in ds.records if r["kind"] == "lesion"]
    assert len(positives) == 2 * len(DIRECTIONS)
    for rec in positives:
        image = sitk.ReadImage(str(tmp_path / rec["volume"]))
        lps = (rec["x"], rec["y"], rec["z"])
        n = int(rec["patch_id"].split("_les")[1])
        assert np.allclose(lps, centres[rec["volume"]][n], atol=1e-3)  # RAS files came back as LPS
        cidx = np.array(image.TransformPhysicalPointToContinuousIndex(lps))[::-1]  # (k, j, i)
        centre = np.array([rec["start_k"], rec["start_j"], rec["start_i"]]) + np.array(PATCH) // 2
        assert np.all(np.abs(centre - cidx) <= 0.5 + 1e-9), (rec["patch_id"], centre, cidx)
        assert centre.tolist() == [rec["centre_k"], rec["centre_j"], rec["centre_i"]]
        # The pixels agree: the planted bright 3×3×3 cube is centred in the patch (a box filter
        # finds it; single saturated noise voxels cannot compete).
        smooth = uniform_filter(ds.load(rec).astype(float), size=3, mode="constant")
        assert np.unravel_index(np.argmax(smooth), smooth.shape) == tuple(np.array(PATCH) // 2)


def test_point_formats_agree(tmp_path):
    """The same LPS point read from .mrk.json (LPS and RAS), .fcsv (LPS, RAS, legacy) and CSV."""
    p = np.array([[12.5, -40.25, 7.0], [-3.0, 8.0, 101.5]])
    ras = p * [-1, -1, 1]
    (tmp_path / "a.mrk.json").write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "RAS",
        "controlPoints": [{"position": list(v)} for v in ras]
        + [{"position": [0, 0, 0], "positionStatus": "undefined"}]}]}))
    (tmp_path / "b.fcsv").write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
                                     "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                                     + "".join(f"vtkMRMLMarkupsFiducialNode_{n},{v[0]},{v[1]},{v[2]},0,0,0,1,1,1,0,F-{n},,\n"
                                               for n, v in enumerate(p)))
    (tmp_path / "c.fcsv").write_text("# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
                                     + "".join(f"id{n},{v[0]},{v[1]},{v[2]},0,0,0,1,1,1,0,F-{n},,\n" for n, v in enumerate(ras)))
    (tmp_path / "d.csv").write_text("x,y,z\n" + "".join(f"{v[0]},{v[1]},{v[2]}\n" for v in p))
    for name in ["a.mrk.json", "b.fcsv", "c.fcsv", "d.csv"]:
        assert np.allclose(read_points(tmp_path / name), p), name
