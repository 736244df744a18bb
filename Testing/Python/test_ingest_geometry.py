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
        healthy = write_case(tmp_path, f"H{n}", (20, 40, 36), (), direction, seed=50 + n)[0]
        rows.append((f"H{n}", healthy, "healthy", ""))
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
                                     + "".join(f"vtkMRMLMarkupsFiducialNode_{n},{v[0]},{v[1]},{v[2]},"
                                               f"0,0,0,1,1,1,0,F-{n},,\n" for n, v in enumerate(p)))
    (tmp_path / "c.fcsv").write_text("# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
                                     + "".join(f"id{n},{v[0]},{v[1]},{v[2]},0,0,0,1,1,1,0,F-{n},,\n"
                                               for n, v in enumerate(ras)))
    (tmp_path / "d.csv").write_text("x,y,z\n" + "".join(f"{v[0]},{v[1]},{v[2]}\n" for v in p))
    for name in ["a.mrk.json", "b.fcsv", "c.fcsv", "d.csv"]:
        assert np.allclose(read_points(tmp_path / name), p), name


def test_volume_formats_read_alike(tmp_path):
    """NRRD, NIfTI, MHA and a DICOM series folder give the same voxels and geometry."""
    from blcam.io.volume import read_volume
    arr = np.random.default_rng(1).integers(0, 2000, size=(5, 12, 10)).astype(np.int16)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.5, 0.4, 1.25))
    image.SetOrigin((-20.0, 3.5, 11.0))
    for ext in ("nrrd", "nii.gz", "mha"):
        sitk.WriteImage(image, str(tmp_path / f"v.{ext}"))
    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = image[:, :, k]
        origin = "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))
        for tag, value in {"0020|000e": "1.2.826.0.1.3680043.2.1125.1", "0020|0013": str(k + 1),
                           "0020|0032": origin, "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": "1.25",
                           "0028|0030": "0.4\\0.5", "0008|0060": "US"}.items():
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.2.{k + 1}")
        writer.SetFileName(str(series / f"s{k:03d}.dcm"))
        writer.Execute(sl)
    for path in [tmp_path / "v.nrrd", tmp_path / "v.nii.gz", tmp_path / "v.mha", series]:
        got, geom = read_volume(path)
        assert np.array_equal(got, arr), path
        assert np.allclose(geom.spacing, (0.5, 0.4, 1.25), atol=1e-3), path
        assert np.allclose(geom.index_to_lps([1, 2, 3]), image.TransformIndexToPhysicalPoint((1, 2, 3)),
                           atol=1e-3), path
