"""Localisation metrics (pointing game, distance, FROC, volume AUC) and evaluate-detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cam_fixtures import blob_volume, write_detect_folder
from blcam.cli import main
from blcam.io.points import write_markups
from blcam.io.volume import Geometry, write_volume
from blcam.metrics.localisation import FROC_RATES, VolumeDetections, VolumeTruth, evaluate_localisation

GEOM = Geometry((40, 40, 20), (0.5, 0.5, 1.0), (10.0, 20.0, -5.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))


def _ball_mask(centre_kji, radius_vox, label=1):
    mask = np.zeros(GEOM.shape, np.uint8)
    grid = np.indices(GEOM.shape).transpose(1, 2, 3, 0)
    mask[np.linalg.norm(grid - np.asarray(centre_kji), axis=-1) <= radius_vox] = label
    return mask


def _lps(kji):
    return GEOM.index_to_lps(np.asarray(kji, float)[::-1])


def _cohort():
    """A: masked lesion; B: centre only; C: healthy (module docstring of the test)."""
    a_centre = (10, 20, 20)
    a = VolumeTruth.with_mask("A", True, [_lps(a_centre)], _ball_mask(a_centre, 6), GEOM, hit_mm=5.0)
    b = VolumeTruth.with_mask("B", True, [_lps((10, 10, 10))], None, GEOM, hit_mm=5.0)
    c = VolumeTruth.with_mask("C", False, [], None, GEOM, hit_mm=5.0)
    dets = [VolumeDetections("A", np.array([_lps((11, 21, 22)), _lps((12, 21, 20)), _lps((2, 2, 2))]),
                             np.array([0.9, 0.85, 0.8]), 0.9),
            VolumeDetections("B", np.array([_lps((10, 35, 35)), _lps((10, 12, 10))]), np.array([0.95, 0.3]), 0.95),
            VolumeDetections("C", np.array([_lps((5, 5, 5)), _lps((15, 30, 30))]), np.array([0.7, 0.2]), 0.7)]
    return [a, b, c], dets


def test_pointing_game_distance_froc_and_auc_on_a_known_cohort():
    truths, dets = _cohort()
    r = evaluate_localisation(truths, dets, hit_mm=5.0)
    # A's best candidate lies in its mask; B's best is 17.7 mm away (its near one scores low).
    assert [row["hit"] for row in r["per_lesion"]] == [True, False]
    assert r["pointing_game"] == 0.5
    d_a = np.linalg.norm(_lps((11, 21, 22)) - _lps((10, 20, 20)))
    d_b = np.linalg.norm(_lps((10, 35, 35)) - _lps((10, 10, 10)))
    assert r["distance_mm_median"] == pytest.approx((d_a + d_b) / 2)
    assert r["offset_kji_voxels_mean"] == pytest.approx([1.0, 1.0, 2.0])
    # FROC by hand: .95 FP, .9 TP(A), .85 second hit on A (neither), .8 FP, .7 FP, .3 TP(B), .2 FP
    f = r["froc"]
    assert f["sensitivity"] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert f["mean_sensitivity"] == pytest.approx(4.5 / 7)
    assert f["rates"] == list(FROC_RATES)
    assert r["volume_auc"] == 1.0


def test_a_centre_just_outside_its_mask_is_attached_to_the_nearest_component():
    mask = _ball_mask((10, 20, 20), 4, label=3)
    t = VolumeTruth.with_mask("A", True, [_lps((10, 20, 26))], mask, GEOM, hit_mm=5.0)
    assert t.mask_labels == [3]
    far = VolumeTruth.with_mask("A", True, [_lps((10, 5, 5))], mask, GEOM, hit_mm=5.0)
    assert far.mask_labels == [0]                    # too far: falls back to the radius rule


def test_evaluate_detection_cli_reads_a_detect_folder(tmp_path):
    vol = blob_volume(GEOM.shape, [(10, 20, 20)], radius_vox=5)
    write_volume(tmp_path / "v1.nrrd", vol, GEOM)
    write_volume(tmp_path / "v2.nrrd", vol, GEOM)
    write_volume(tmp_path / "masks" / "v1.nrrd", _ball_mask((10, 20, 20), 5), GEOM)
    write_markups(tmp_path / "v1.mrk.json", [_lps((10, 20, 20))])
    with (tmp_path / "cohort.csv").open("w") as fh:
        fh.write("patient,volume,label,annotation\np1,v1.nrrd,lesion,v1.mrk.json\np2,v2.nrrd,healthy,\n")
    det = tmp_path / "det"
    write_detect_folder(det, [("v1", tmp_path / "v1.nrrd", [_lps((11, 20, 20))], [0.8]),
                              ("v2", tmp_path / "v2.nrrd", [_lps((3, 3, 3))], [0.4])])
    out = tmp_path / "loc.json"
    assert main(["evaluate-detection", str(det), str(tmp_path / "cohort.csv"), "--masks",
                 str(tmp_path / "masks"), "--out", str(out)]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    assert r["pointing_game"] == 1.0 and r["volume_auc"] == 1.0 and r["masks"] == 1
    assert r["froc"]["sensitivity"][0] == 1.0
    assert "pointing game" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert out.with_name("loc_froc.png").stat().st_size > 5_000
    assert main(["evaluate-detection", str(tmp_path), str(tmp_path / "cohort.csv")]) == 2
