"""Whole-volume detection: candidates, output files, geometry, CLI (blcam.detect)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from blcam.cam.maps import LesionMap, upsample_features
from blcam.cli import main
from blcam.detect.candidates import find_candidates
from blcam.detect.pipeline import DetectSettings, detect
from blcam.io.points import read_points
from blcam.io.volume import Geometry, write_volume
from blcam.score_calibration import sigmoid

STRIDE = (16, 16, 16)
# Rotated about the beam axis and left-handed (determinant −1): nothing may assume identity.
TWISTED = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _geometry(shape_kji, direction, spacing=(0.4, 0.3, 0.9), origin=(12.0, -30.5, 7.25)) -> Geometry:
    return Geometry(tuple(reversed(shape_kji)), spacing, origin, direction)


def _map(logit: np.ndarray, shape, crop=(16, 48, 48)) -> LesionMap:
    cam = np.maximum(logit, 0)
    heat = upsample_features(cam, shape, STRIDE)
    return LesionMap(logit.astype(np.float32), 0.0, STRIDE, crop, heat / heat.max(), float(heat.max()))


def test_candidates_position_score_nms_and_size():
    shape = (48, 96, 160)
    logit = np.full((3, 6, 10), -3.0, np.float32)
    logit[1, 2, 3] = 6.0          # strong lesion
    logit[1, 2, 5] = 5.0          # weaker peak 2 cells (16 mm) away: suppressed by a 20 mm NMS
    logit[0, 2, 8] = 4.0          # separate lesion
    geometry = _geometry(shape, TWISTED, spacing=(0.5, 0.5, 0.5))
    lmap = _map(logit, shape)
    cands, volume_score = find_candidates(lmap, geometry, top_k=10, min_score=0.0, nms_mm=20.0)
    positions = [tuple(np.round(c.index_kji, 1)) for c in cands]
    first = lmap.feature_to_index((1, 2, 3))
    assert positions[0] == tuple(np.round(first, 1))                      # (16, 32, 48)
    np.testing.assert_allclose(cands[0].lps, geometry.index_to_lps(first[::-1]), atol=1e-9)
    assert tuple(np.round(lmap.feature_to_index((0, 2, 8)), 1)) in positions
    assert tuple(np.round(lmap.feature_to_index((1, 2, 5)), 1)) not in positions
    assert all(np.linalg.norm(np.subtract(a.lps, b.lps)) >= 20.0 for a in cands for b in cands if a is not b)
    assert cands[0].score == pytest.approx(float(sigmoid(lmap.crop_logit()[1, 2, 3])))
    assert volume_score == max(c.score for c in cands)
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    # FWHM of a single-cell peak under linear interpolation: one stride (8 mm) per axis.
    assert cands[0].size_mm_ijk == pytest.approx((8.0, 8.0, 8.0), abs=0.6)
    top1, _ = find_candidates(lmap, geometry, top_k=1)
    assert len(top1) == 1
    strict, score = find_candidates(lmap, geometry, min_score=0.99999)
    assert strict == [] and score == volume_score


@pytest.mark.parametrize("direction", [TWISTED, FLIPPED], ids=["rotated-left-handed", "flipped"])
def test_detect_outputs_overlay_the_input_exactly(tmp_path, direction):
    shape = (32, 64, 80)
    lesion = (16, 32, 48)                      # on a receptive-field centre of the hand-built detector
    geometry = _geometry(shape, direction)
    write_volume(tmp_path / "case.nrrd", blob_volume(shape, [lesion], radius_vox=9), geometry)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))
    # Candidates at the map's peaks, as placed by the feature geometry under test: unrefined
    # (refinement asks the network; the hand-built one reads padding as dark, see test_refine.py)
    # and unsnapped (snapping reads the image, test_snap.py).
    summary = detect(model, [tmp_path / "case.nrrd"], tmp_path / "out",
                     DetectSettings(overlays=1, refine=0, snap_mm=0.0), progress=False)

    heat = sitk.ReadImage(str(tmp_path / "out" / "case_heatmap.nrrd"))
    assert heat.GetSize() == geometry.size and heat.GetPixelID() == sitk.sitkFloat32
    assert heat.GetSpacing() == geometry.spacing and heat.GetOrigin() == geometry.origin
    assert heat.GetDirection() == geometry.direction
    arr = sitk.GetArrayViewFromImage(heat)
    assert 0.0 <= arr.min() and arr.max() == pytest.approx(1.0)
    hottest = np.unravel_index(np.argmax(arr), arr.shape)
    # In-plane at the detector's receptive-field centres; along k at the centre of the slab
    # whose first slice holds the blob (the hand-built detector answers for its slab's start,
    # a trained one for the slab's centre, where training kept its lesions).
    expected_kji = np.add(lesion, (7.5, 0, 0))
    assert np.abs(np.subtract(hottest, expected_kji)).max() <= 1.0
    lps_hot = heat.TransformContinuousIndexToPhysicalPoint([float(v) for v in hottest[::-1]])
    np.testing.assert_allclose(lps_hot, geometry.index_to_lps(np.asarray(hottest[::-1], float)), atol=1e-6)

    rows = list(csv.DictReader((tmp_path / "out" / "case_candidates.csv").open()))
    markups = read_points(tmp_path / "out" / "case_candidates.mrk.json")
    np.testing.assert_allclose(markups, [[float(r[a]) for a in "xyz"] for r in rows], atol=1e-3)
    top = geometry.lps_to_index(markups[0])[::-1]
    assert np.abs(top - expected_kji).max() <= 1.0
    assert rows[0]["label"] == "lesion-1" and float(rows[0]["score"]) == max(float(r["score"]) for r in rows)
    doc = json.loads((tmp_path / "out" / "case_candidates.json").read_text(encoding="utf-8"))
    assert doc["coordinate_system"] == "LPS" and doc["candidates"][0]["label"] == "lesion-1"
    assert (tmp_path / "out" / "case_overlay_lesion-1.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "case_contact.png").stat().st_size > 10_000
    det = list(csv.DictReader(summary.open()))
    assert det[0]["name"] == "case" and float(det[0]["volume_score"]) == pytest.approx(float(rows[0]["score"]))

    # --no-pictures (the Slicer panel's Detect): the same heatmap and candidates, no PNG at all.
    assert main(["detect", str(model), str(tmp_path / "case.nrrd"), "--out", str(tmp_path / "bare"), "--refine", "0",
                 "--snap-mm", "0", "--overlays", "1", "--no-pictures", "--device", "cpu"]) == 0
    assert not list((tmp_path / "bare").glob("*.png"))
    bare = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "bare" / "case_heatmap.nrrd")))
    np.testing.assert_array_equal(bare, arr)
    assert (tmp_path / "bare" / "case_candidates.csv").read_text() == \
        (tmp_path / "out" / "case_candidates.csv").read_text()
    # detections.csv times the pictures apart: what --no-pictures saves.
    bare_row = next(csv.DictReader((tmp_path / "bare" / "detections.csv").open()))
    assert float(det[0]["pictures_seconds"]) > 0.05 and float(bare_row["pictures_seconds"]) < 0.01


def test_detect_cli_progress_json_sliding_and_errors(tmp_path, capsys):
    shape = (16, 48, 48)
    write_volume(tmp_path / "a.nrrd", blob_volume(shape, [(0, 16, 16)], radius_vox=8), _geometry(shape, FLIPPED))
    model = save_test_model(tmp_path / "m.safetensors", dark_blob_model())
    assert main(["detect", str(model), str(tmp_path / "a.nrrd"), "--out", str(tmp_path / "o"),
                 "--method", "sliding", "--device", "cpu", "--overlays", "0", "--progress-json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    progress = [ln for ln in lines if ln["event"] == "progress"]
    assert lines[-1] == {"event": "done", "summary": str(tmp_path / "o" / "detections.csv")}
    assert progress[-1]["fraction"] == 1.0 and {ln["stage"] for ln in progress} >= {"map", "done"}
    assert [ln["fraction"] for ln in progress] == sorted(ln["fraction"] for ln in progress)
    assert 0 < min(ln["fraction"] for ln in progress if ln["stage"] == "map") <= 0.85   # the map's share
    assert "pictures" in {ln["stage"] for ln in progress}
    # Without pictures no stage says it draws them.
    assert main(["detect", str(model), str(tmp_path / "a.nrrd"), "--out", str(tmp_path / "bare"), "--method",
                 "sliding", "--device", "cpu", "--no-pictures", "--progress-json"]) == 0
    stages = [json.loads(ln)["stage"] for ln in capsys.readouterr().out.splitlines() if '"progress"' in ln]
    assert "pictures" not in stages and stages[-1] == "done"
    assert main(["detect", str(tmp_path / "nope.safetensors"), str(tmp_path / "a.nrrd"), "--out", "x"]) == 2
    assert "model" in capsys.readouterr().err
    assert main(["detect", str(model), str(tmp_path / "missing.nrrd"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.nrrd" in capsys.readouterr().err
    assert main(["detect", str(model), str(tmp_path / "a.nrrd"), "--out", str(tmp_path / "o"),
                 "--min-score", "2"]) == 2
    assert "--min-score" in capsys.readouterr().err
