"""Bad cohorts: each case gets one clear line naming the row or file, exit status 2, and
nothing written to the output folder."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from _cohort_fixtures import small_cohort, write_case, write_cohort_csv
from blcam.cli import main


@pytest.fixture()
def base(tmp_path):
    """A valid cohort's rows plus a helper to write a variant of it."""
    small_cohort(tmp_path, n_healthy=2, n_lesion=2, shape=(8, 20, 20))
    lines = (tmp_path / "cohort.csv").read_text(encoding="utf-8").splitlines()

    def variant(extra_rows=(), drop_rows=(), header=None, replace=None):
        rows = [ln for n, ln in enumerate(lines[1:]) if n not in drop_rows]
        if replace:
            rows = [replace(r) for r in rows]
        path = tmp_path / "bad.csv"
        path.write_text("\n".join([header or lines[0], *rows, *extra_rows]) + "\n")
        return path
    return tmp_path, variant


def run_export(capsys, csv_path, out):
    rc = main(["export", str(csv_path), "--out", str(out), "--patch", "4", "8", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert not out.exists(), "a failed export must not leave anything behind"
    return err


def test_valid_cohort_exports(base, capsys):
    folder, variant = base
    assert main(["export", str(variant()), "--out", str(folder / "ok"), "--patch", "4", "8", "8"]) == 0
    assert (folder / "ok" / "manifest.csv").is_file()


def test_missing_volume_file(base, capsys):
    folder, variant = base
    err = run_export(capsys, variant(extra_rows=["P900,volumes/nope.nrrd,healthy,"]), folder / "out")
    assert "row 8" in err and "nope.nrrd" in err and "not found" in err


def test_unreadable_volume(base, capsys):
    folder, variant = base
    (folder / "volumes" / "junk.nrrd").write_bytes(b"this is not an image\n" * 20)
    err = run_export(capsys, variant(extra_rows=["P900,volumes/junk.nrrd,healthy,"]), folder / "out")
    assert "row 8" in err and "junk.nrrd" in err and "cannot read" in err


@pytest.mark.parametrize("kind,word", [("2d", "2D"), ("4d", "4D"), ("rgb", "components")])
def test_wrong_dimension_or_channels(base, capsys, kind, word):
    folder, variant = base
    if kind == "2d":
        image = sitk.GetImageFromArray(np.zeros((20, 20), np.uint8))
    elif kind == "4d":
        image = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((4, 20, 20), np.uint8))] * 3)
    else:
        image = sitk.GetImageFromArray(np.zeros((4, 20, 20, 3), np.uint8), isVector=True)
    sitk.WriteImage(image, str(folder / "volumes" / f"{kind}.nrrd"))
    err = run_export(capsys, variant(extra_rows=[f"P900,volumes/{kind}.nrrd,healthy,"]), folder / "out")
    assert "row 8" in err and f"{kind}.nrrd" in err and word in err


def test_lesion_without_annotation(base, capsys):
    folder, variant = base
    err = run_export(capsys, variant(extra_rows=["P900,volumes/P000_L.nrrd2,lesion,"]), folder / "out")
    assert "row 8" in err and "no annotation" in err


def test_centre_outside_volume(base, capsys):
    folder, variant = base
    vol, ann, _ = write_case(folder, "far", (8, 20, 20), [(4, 10, 10)])
    doc = json.loads((folder / ann).read_text(encoding="utf-8"))
    doc["markups"][0]["controlPoints"][0]["position"][0] += 500.0  # half a metre to the side
    (folder / ann).write_text(json.dumps(doc))
    err = run_export(capsys, variant(extra_rows=[f"P900,{vol},lesion,{ann}"]), folder / "out")
    assert "row 8" in err and "lesion centre 1" in err and "outside" in err


def test_unknown_label(base, capsys):
    folder, variant = base
    err = run_export(capsys, variant(extra_rows=["P900,volumes/P000_L.nrrd,malignant,"]), folder / "out")
    assert "row 8" in err and "'malignant'" in err


def test_empty_cohort(base, capsys):
    folder, variant = base
    err = run_export(capsys, variant(drop_rows=range(100)), folder / "out")
    assert "empty" in err


def test_only_one_class(base, capsys):
    folder, _ = base
    path = write_cohort_csv(folder / "one.csv", [("A", "volumes/P000_L.nrrd", "healthy", ""),
                                                  ("B", "volumes/P001_L.nrrd", "healthy", "")])
    err = run_export(capsys, path, folder / "out")
    assert "one.csv" in err and "healthy" in err and "both" in err


def test_duplicate_rows(base, capsys):
    folder, variant = base
    err = run_export(capsys, variant(extra_rows=["P000,volumes/P000_L.nrrd,healthy,"]), folder / "out")
    assert "row 8" in err and "listed twice" in err and "row 2" in err


def test_missing_columns(base, capsys):
    folder, variant = base
    err = run_export(capsys, variant(header="patient,volume,annotation", replace=lambda r: r), folder / "out")
    assert "missing column" in err and "label" in err


def test_missing_cohort_file(tmp_path, capsys):
    err = run_export(capsys, tmp_path / "nowhere.csv", tmp_path / "out")
    assert "nowhere.csv" in err and "not found" in err
