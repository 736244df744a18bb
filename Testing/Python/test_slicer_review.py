"""The review loop with real MRML (slicer-core): verdicts on Detect candidates → "Add case"
→ the next export holds the accepted centres as lesion patches and the rejected places as
reviewed negatives."""

from __future__ import annotations

import csv

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from blcam.errors import BlcamError
from blcam.patches.dataset import load_dataset
from blcam.patches.export import ExportSettings, export_dataset
from BreastLesionCAMLib.Dataset import addCase
from BreastLesionCAMLib.Results import candidateTable
from BreastLesionCAMLib.Review import (
    LESION,
    NOT_LESION,
    addReviewedCase,
    nextUnreviewed,
    reviewedPoints,
    setVerdict,
    verdicts,
)
from BreastLesionCAMLib.Scenario import addPhantomCase, rasToIJK


def _candidates(scene, volume, pointsRAS):
    """A candidates node as Detect loads it: labels lesion-N, the score in the description."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{volume.GetName()} candidates")
    node.CreateDefaultDisplayNodes()
    for n, p in enumerate(pointsRAS):
        node.AddControlPointWorld(*[float(v) for v in p], f"lesion-{n + 1}")
        node.SetNthControlPointDescription(n, f"{0.9 - 0.2 * n:.3f}")
    return node


def _corner(volume, ijk):
    """World RAS of voxel ``ijk`` of ``volume``."""
    from BreastLesionCAMLib.NodeIO import worldIJKToRAS
    return (worldIJKToRAS(volume) @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def test_verdicts_are_kept_per_point_shown_in_the_table_and_walk_to_the_next(headless):
    scene = headless.scene
    case = addPhantomCase(scene, "R1", 31, lesions=1)
    node = _candidates(scene, case.volume, [case.centresRAS[0], _corner(case.volume, (10, 10, 10)),
                                             _corner(case.volume, (80, 80, 50))])
    table = candidateTable(case.volume, node)
    setVerdict(node, 0, LESION, table)
    setVerdict(node, 1, NOT_LESION, table)
    assert verdicts(node) == [LESION, NOT_LESION, None]
    column = table.GetTable().GetColumnByName("Verdict")
    assert [column.GetValue(n) for n in range(3)] == [LESION, NOT_LESION, ""]
    assert node.GetNthControlPointSelected(1) == 0 and node.GetNthControlPointSelected(0) == 1
    assert nextUnreviewed(node, after=0) == 2 and nextUnreviewed(node, after=2) == 2
    node.RemoveNthControlPoint(0)                                     # verdicts follow their points
    assert verdicts(node) == [NOT_LESION, None]
    setVerdict(node, 0, None, table)
    assert verdicts(node) == [None, None] and nextUnreviewed(node) == 0
    with pytest.raises(BlcamError, match="unknown verdict"):
        setVerdict(node, 0, "maybe")
    with pytest.raises(BlcamError, match="candidate 5 does not exist"):
        setVerdict(node, 4, LESION)


def test_review_add_case_and_export_round_trip(headless, tmp_path):
    scene = headless.scene
    ds = tmp_path / "dataset"
    # A small dataset of annotated cases (both classes, enough patients for a split).
    for n in range(3):
        c = addPhantomCase(scene, f"L{n}", 40 + n, lesions=1)
        addCase(c.volume, ds, f"L{n}", "lesion", c.centres)
        addCase(addPhantomCase(scene, f"H{n}", 50 + n).volume, ds, f"H{n}", "healthy")
    # A new study, reviewed: Detect found its lesion (accepted), and two false alarms (rejected).
    study = addPhantomCase(scene, "New", 60, lesions=1)
    far = [_corner(study.volume, (12, 12, 8)), _corner(study.volume, (84, 84, 56))]
    node = _candidates(scene, study.volume, [study.centresRAS[0] + [0.4, 0.0, 0.0], *far])
    with pytest.raises(BlcamError, match="no candidate has a verdict"):
        addReviewedCase(study.volume, node, ds, "N1")
    setVerdict(node, 0, LESION)
    setVerdict(node, 1, NOT_LESION)
    setVerdict(node, 2, NOT_LESION)
    accepted, rejected = reviewedPoints(node)
    assert len(accepted) == 1 and len(rejected) == 2
    record = addReviewedCase(study.volume, node, ds, "N1")       # no centres node: made from the verdicts
    assert record.label == "lesion" and record.centres == 1
    rows = list(csv.DictReader((ds / "cohort.csv").open(encoding="utf-8")))
    assert rows[-1]["patient"] == "N1" and rows[-1]["negatives"].endswith("_negatives.mrk.json")
    assert all(r["negatives"] == "" for r in rows[:-1])
    assert scene.GetNodesByName("New reviewed negatives").GetNumberOfItems() == 0   # no node left behind

    export_dataset(ds / "cohort.csv", tmp_path / "patches",
                   ExportSettings(patch=(16, 32, 32), negatives_per_volume=1, folds=2), progress=False)
    mine = [r for r in load_dataset(tmp_path / "patches").records if r["patient"] == "N1"]
    positives = [r for r in mine if r["kind"] == "lesion"]
    reviewed = [r for r in mine if r["kind"] == "reviewed"]
    assert len(positives) == 1 and len(reviewed) == 2 and all(r["label"] == 0 for r in reviewed)
    # The accepted centre is the lesion's (inside its mask); the negatives sit at the rejected places.
    i, j, k = np.round(rasToIJK(study.volume, accepted)[0]).astype(int)
    assert study.mask[k, j, i] > 0
    assert (positives[0]["centre_k"], positives[0]["centre_j"], positives[0]["centre_i"]) == (k, j, i)
    expected = {tuple(np.clip(np.round(ijk[::-1]).astype(int), (8, 16, 16), (56, 80, 80)))
                for ijk in rasToIJK(study.volume, rejected)}
    assert {(r["centre_k"], r["centre_j"], r["centre_i"]) for r in reviewed} == expected
