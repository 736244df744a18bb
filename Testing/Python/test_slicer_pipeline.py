"""The module's whole scenario on real MRML: add cases → export → train → Detect → look at it.

One module-scoped run (``BreastLesionCAMLib.Scenario``, also the module's Slicer self-test):
phantom volumes with awkward geometry go through the Logic exactly as the panel drives it,
every heavy step a real background ``python -m blcam`` process. The tests then check what a
radiologist would see: the heatmap on the input's exact grid, the candidates inside the true
lesions, the slice views' layers, a rendered Red view, and all of it after a scene reload.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from _headless import VIEW_COLORS, createScene, renderSliceView, renderSliceViews
from _segment_fixtures import outer_layer
from _slicer_fixtures import assert_cancel_kills_tree
from blcam.errors import BlcamError
from blcam.io.points import read_points
from BreastLesionCAMLib import Scenario
from BreastLesionCAMLib.ColorTable import COLOR_TABLE_ATTRIBUTE
from BreastLesionCAMLib.Jobs import JobState
from BreastLesionCAMLib.Logic import BreastLesionCAMLogic
from BreastLesionCAMLib.NodeIO import controlPointsWorldRAS, ijkToRAS
from BreastLesionCAMLib.Results import findOutputs

ROOT = Path(__file__).resolve().parents[2]


def _run(job, what):
    state = job.wait(Scenario.TIMEOUT_S)
    assert state is JobState.SUCCEEDED, f"{what} {state.value}: {job.message}\n" + "\n".join(list(job.log)[-20:])
    return job


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    start = time.monotonic()
    headless = createScene()
    logic = BreastLesionCAMLogic()
    cases = Scenario.addCohort(headless.scene)
    dataset = work / "dataset"
    for case in cases:
        if not case.heldOut:
            logic.addCase(case.volume, dataset, case.patient, case.label, case.centres)
    t0 = time.monotonic()
    export = _run(logic.exportPatches(dataset, extraArgs=Scenario.EXPORT_ARGS), "export")
    t1 = time.monotonic()
    epochs = []
    train = logic.startTraining(dataset / "patches", work / "run", onEvent=lambda e: epochs.append(e)
                                if e.get("event") == "progress" else None, **Scenario.TRAIN_SETTINGS)
    returned = time.monotonic() - t1
    assert train.running and returned < 2.0, "starting a job must not block the caller (the GUI)"
    _run(train, "train")
    t2 = time.monotonic()
    held = next(c for c in cases if c.heldOut)
    detect = logic.detect(held.volume, logic.getParameterNode().modelPath, outFolder=work / "detect",
                          extraArgs=Scenario.DETECT_ARGS)
    assert detect.running and time.monotonic() - t2 < 2.0
    _run(detect, "detect")
    t3 = time.monotonic()
    assert detect.result.folder == work / "detect"  # a folder the caller chose is kept
    print(f"\npipeline: cases {t0 - start:.1f} s, export {t1 - t0:.1f} s, train {t2 - t1:.1f} s, "
          f"detect {t3 - t2:.1f} s")
    yield SimpleNamespace(work=work, headless=headless, logic=logic, cases=cases, dataset=dataset, held=held,
                          export=export, train=train, epochs=epochs, detect=detect, result=detect.result)
    headless.close()


def test_cases_become_a_cohort_and_export_cuts_their_patches(pipeline):
    rows = list(csv.DictReader((pipeline.dataset / "cohort.csv").open()))
    training_cases = [c for c in pipeline.cases if not c.heldOut]
    assert len(rows) == len(training_cases)
    manifest = list(csv.DictReader((pipeline.dataset / "patches" / "manifest.csv").open()))
    lesions = sum(len(c.centresRAS) for c in training_cases)
    assert sum(r["kind"] == "lesion" for r in manifest) == lesions
    assert any(r["split"] == "test" for r in manifest) and any(r["split"] == "train" for r in manifest)


def test_training_runs_through_the_cli_and_becomes_the_current_model(pipeline):
    settings = Scenario.TRAIN_SETTINGS
    assert [e["epoch"] for e in pipeline.epochs] == list(range(1, settings["epochs"] + 1))
    assert all({"train_loss", "val_acc", "eta_s"} <= set(e) for e in pipeline.epochs)
    model = pipeline.logic.getParameterNode().modelPath
    assert Path(model) == pipeline.train.result.model and Path(model).is_file()
    assert pipeline.train.message.startswith("Training finished in") and pipeline.train.result.curves is not None
    assert pipeline.logic.getParameterNode().runFolder == str(pipeline.work / "run")


def test_heatmap_is_on_the_inputs_exact_grid_with_the_modules_display(pipeline):
    result, held = pipeline.result, pipeline.held
    assert Scenario.checkDetection(held, result) == []
    heat = result.heatmap
    np.testing.assert_array_equal(ijkToRAS(heat), ijkToRAS(held.volume))
    assert heat.GetTransformNodeID() == held.volume.GetTransformNodeID() is not None  # also under the transform
    display = heat.GetDisplayNode()
    assert display.GetColorNode().GetAttribute(COLOR_TABLE_ATTRIBUTE) == "inferno"
    assert display.GetColorNode().GetNumberOfColors() == 256
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.2)
    scene = pipeline.headless.scene
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == held.volume.GetID()
        assert composite.GetForegroundVolumeID() == heat.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    # The voxel values are the CLI's file, unchanged.
    from blcam.io.volume import read_volume
    heatmap_file = findOutputs(pipeline.work / "detect").heatmap
    np.testing.assert_allclose(slicer.util.arrayFromVolume(heat), read_volume(heatmap_file)[0], atol=1e-6)


def test_candidates_sit_where_the_cli_put_them_and_inside_true_lesions(pipeline):
    result, held = pipeline.result, pipeline.held
    markups_file = findOutputs(pipeline.work / "detect").markups
    cli_ras = read_points(markups_file) * [-1, -1, 1]  # the file is LPS, world frame
    np.testing.assert_allclose(controlPointsWorldRAS(result.candidates), cli_ras, atol=1e-3)
    assert result.candidates.GetTransformNodeID() == held.volume.GetTransformNodeID()
    top = Scenario.candidatesInLesions(held, result.candidates, top=len(held.centresRAS))
    assert top and all(top), f"top candidates inside lesions: {top}"
    scores = [result.table.GetCellText(r, 1) for r in range(result.table.GetNumberOfRows())]
    assert len(scores) == result.candidates.GetNumberOfControlPoints() and all(float(s) >= 0 for s in scores)


def test_selecting_a_candidate_row_centres_all_slice_views_on_it(pipeline):
    candidates = pipeline.result.candidates
    index = candidates.GetNumberOfControlPoints() - 1
    position = pipeline.logic.jumpToCandidate(candidates, index)
    scene = pipeline.headless.scene
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_to_ras = scene.GetNthNodeByClass(n, "vtkMRMLSliceNode").GetSliceToRAS()
        centre = [slice_to_ras.GetElement(r, 3) for r in range(3)]
        np.testing.assert_allclose(centre, position, atol=1e-3)


def test_opacity_and_threshold_controls_update_the_views(pipeline):
    logic, heat = pipeline.logic, pipeline.result.heatmap
    scene = pipeline.headless.scene
    logic.setHeatmapOpacity(0.55)
    logic.setHeatmapThreshold(heat, 0.45)
    try:
        assert heat.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.45)
        assert all(scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode").GetForegroundOpacity() == pytest.approx(0.55)
                   for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")))
    finally:
        logic.setHeatmapOpacity(0.3)
        logic.setHeatmapThreshold(heat, 0.2)


def test_red_slice_view_renders_image_heatmap_and_candidates(pipeline, tmp_path):
    held, result = pipeline.held, pipeline.result
    top = controlPointsWorldRAS(result.candidates)[0]
    held.centres.GetDisplayNode().SetVisibility(False)  # show what Detect found, not the ground truth
    try:  # the view is centred on the top candidate, which lies in the lesion
        pixels = renderSliceView(pipeline.headless, tmp_path / "red.png", "Red", size=(512, 512), centerRAS=top)
    except RuntimeError as exc:  # only when no OpenGL at all (no EGL, OSMesa or X)
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    finally:
        held.centres.GetDisplayNode().SetVisibility(True)
    assert (tmp_path / "red.png").stat().st_size > 10_000
    rgb = pixels.astype(int)
    assert rgb.std() > 10, "blank rendering"
    red_minus_blue = rgb[..., 0] - rgb[..., 2]
    # Where the true lesion centre projects into the view, the heatmap must colour the image.
    x, y = ras_to_pixel(pipeline.headless.sliceLogics["Red"].GetSliceNode(), held.centresRAS[0])
    row, col = 511 - int(round(y)), int(round(x))
    assert 20 <= row < 492 and 20 <= col < 492, "true lesion outside the rendered view"
    lesion = red_minus_blue[row - 20:row + 20, col - 20:col + 20]
    assert np.percentile(lesion, 75) > 25, "no inferno overlay over the lesion"
    corners = np.concatenate([red_minus_blue[:40, :40].ravel(), red_minus_blue[-40:, -40:].ravel()])
    assert np.percentile(lesion, 75) > np.percentile(corners, 75) + 20
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 8) & (rgb.mean(axis=-1) > 40)
    assert grey.mean() > 0.2, "the grey ultrasound image is missing"
    cyan = (rgb[..., 2] - rgb[..., 0] > 120) & (rgb[..., 1] - rgb[..., 0] > 120)
    assert cyan.sum() > 20, "no candidate marker drawn"


def test_three_slice_views_through_the_top_candidate_compose_into_one_picture(pipeline, tmp_path):
    held, result = pipeline.held, pipeline.result
    top = controlPointsWorldRAS(result.candidates)[0]
    held.centres.GetDisplayNode().SetVisibility(False)
    try:
        picture = renderSliceViews(pipeline.headless, tmp_path / "three.png", top, size=(384, 384))
    except RuntimeError as exc:  # only when no OpenGL at all (no EGL, OSMesa or X)
        pytest.skip(f"offscreen OpenGL unavailable: {exc}")
    finally:
        held.centres.GetDisplayNode().SetVisibility(True)
    assert picture.shape == (384 + 8, 3 * 384 + 2 * 8, 3) and (tmp_path / "three.png").stat().st_size > 20_000
    for n, view in enumerate(("Red", "Yellow", "Green")):
        panel = picture[8:, n * (384 + 8):n * (384 + 8) + 384].astype(int)
        assert tuple(picture[0, n * (384 + 8) + 10]) == VIEW_COLORS[view]
        assert panel.std() > 10, f"{view}: blank"
        red_minus_blue = panel[..., 0] - panel[..., 2]
        # Each view is centred on the top candidate, which lies in the lesion: the heatmap shows there.
        assert np.percentile(red_minus_blue[172:212, 172:212], 75) > 25, f"{view}: no heatmap at the candidate"
        cyan = (panel[..., 2] - panel[..., 0] > 120) & (panel[..., 1] - panel[..., 0] > 120)
        assert cyan[142:242, 142:242].sum() > 20, f"{view}: no candidate marker at the centre"


def test_segment_candidate_on_the_real_detect_heatmap_outlines_the_lesion(pipeline):
    """Acceptance on a trained network's Grad-CAM: the top candidate's segment lies inside the
    held-out cyst (up to its outer voxel layer, see test_segment.py) with its volume within 30 %."""
    held = pipeline.held
    made = pipeline.logic.segmentCandidate(0)
    segment = made.region.full(held.mask.shape)        # on the input's grid (test_slicer_segmentation.py)
    lesion = held.mask > 0
    assert made.region.refined and made.segmentation.GetTransformNodeID() == held.volume.GetTransformNodeID()
    assert not (segment & ~outer_layer(lesion)).any()
    assert 0.7 * lesion.sum() <= segment.sum() <= 1.3 * lesion.sum(), (segment.sum(), lesion.sum())


def ras_to_pixel(slice_node, ras) -> tuple[float, float]:
    """Slice-view pixel (x right, y up) where a RAS point projects."""
    xy_to_ras = np.array([[slice_node.GetXYToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
    x, y, _, _ = np.linalg.inv(xy_to_ras) @ np.r_[ras, 1.0]
    return x, y


def test_results_and_state_survive_scene_save_and_reload(pipeline, tmp_path):
    headless, held = pipeline.headless, pipeline.held
    before = controlPointsWorldRAS(pipeline.result.candidates)
    folder = tmp_path / "bundle"
    folder.mkdir()
    assert headless.appLogic.SaveSceneToSlicerDataBundleDirectory(str(folder), None)
    fresh = createScene()  # becomes slicer.mrmlScene; the module's fixture scene is restored below
    try:
        fresh.scene.SetURL(str(next(folder.glob("*.mrml"))))
        assert fresh.scene.Import()
        p = BreastLesionCAMLogic().getParameterNode()
        heat, candidates, table = p.heatmapVolume, p.candidates, p.candidateTable
        volume = fresh.scene.GetFirstNodeByName(held.volume.GetName())
        assert heat is not None and candidates is not None and table is not None
        np.testing.assert_allclose(ijkToRAS(heat), ijkToRAS(volume), atol=1e-9)
        assert heat.GetTransformNodeID() == volume.GetTransformNodeID() is not None
        np.testing.assert_allclose(slicer.util.arrayFromVolume(heat),
                                   same_grid(pipeline.result.heatmap, heat), atol=1e-6)
        display = heat.GetDisplayNode()
        assert display.GetColorNode().GetAttribute(COLOR_TABLE_ATTRIBUTE) == "inferno"
        assert display.GetColorNode().GetNumberOfColors() == 256
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0) and display.GetApplyThreshold()
        np.testing.assert_allclose(controlPointsWorldRAS(candidates), before, atol=1e-3)
        assert table.GetNumberOfRows() == len(before)
        assert p.modelPath == str(pipeline.train.result.model) and p.runFolder == str(pipeline.work / "run")
    finally:
        fresh.close()
        slicer.mrmlScene = headless.scene


def same_grid(before, after) -> np.ndarray:
    """``before``'s voxels in ``after``'s index order. Slicer flips the k axis of a left-handed
    volume when it loads one (the held-out case is mirrored): same voxels, other indices."""
    index_map = np.linalg.inv(ijkToRAS(after)) @ ijkToRAS(before)  # before-IJK → after-IJK
    signs = np.round(np.diag(index_map[:3, :3]))
    assert np.allclose(index_map[:3, :3], np.diag(signs), atol=1e-6), "not a flip of the same grid"
    array = slicer.util.arrayFromVolume(before)
    flips = tuple(2 - axis for axis in range(3) if signs[axis] < 0)  # i, j, k → numpy axes 2, 1, 0
    return np.flip(array, axis=flips) if flips else array


def test_cancel_stops_a_long_training_job_and_its_workers_within_seconds(pipeline):
    model_before = pipeline.logic.getParameterNode().modelPath
    settings = dict(Scenario.TRAIN_SETTINGS, epochs=1000,
                    extraArgs=("--stem", "fast", "--widen", "0.25", "--crop", "12", "40", "40",
                               "--workers", "2", "--resident", "off"))
    job = pipeline.logic.startTraining(pipeline.dataset / "patches", pipeline.work / "run-cancelled", **settings)
    deadline = time.monotonic() + 120
    tree = []
    while time.monotonic() < deadline and job.poll():
        tree = job.process.processTree()
        if len(tree) >= 3:  # the trainer and its DataLoader workers are up
            break
        time.sleep(0.1)
    assert len(tree) >= 3, f"training never started its workers: {list(job.log)[-5:]}"
    pids = [p.pid for p in tree]
    assert_cancel_kills_tree(job, pids)
    assert job.state is JobState.CANCELLED and job.message == "Training cancelled." and job.result is None
    assert pipeline.logic.getParameterNode().modelPath == model_before  # a cancelled run changes nothing


def test_calibrate_scores_holds_out_a_fold_and_the_next_detect_reports_probabilities(pipeline):
    """The panel's "Calibrate scores" box: the run trains without fold 0's patients, Detect on
    their volumes follows as the job's last stage, and the new model's Detect scores are then
    the fitted probabilities (the raw network logit through the stored Platt map)."""
    import json

    from blcam.model import read_metadata
    from blcam.score_calibration import Platt
    from BreastLesionCAMLib.Jobs import describeEpoch
    events, run = [], pipeline.work / "run-calibrated"
    job = _run(pipeline.logic.startTraining(pipeline.dataset / "patches", run, calibrate=True, onEvent=events.append,
                                            **Scenario.TRAIN_SETTINGS), "calibrated training")
    stages = [e["stage"] for e in events if e.get("event") == "progress"]
    assert stages[:Scenario.TRAIN_SETTINGS["epochs"]] == ["epoch"] * Scenario.TRAIN_SETTINGS["epochs"]
    assert set(stages[Scenario.TRAIN_SETTINGS["epochs"]:]) == {"calibrate"}
    last = [e for e in events if e.get("stage") == "calibrate"][-1]
    assert describeEpoch(last) == f"Calibrating scores on validation fold 0: Detect on volume {last['volumes']} of " \
        f"{last['volumes']}"
    meta = read_metadata(job.result.model)
    record, summary = meta["calibration"], job.result.calibration
    assert meta["training"]["fold"] == 0 and summary["fold"] == 0 and summary["volumes"] == record["volumes"]
    manifest = list(csv.DictReader((pipeline.dataset / "patches" / "manifest.csv").open()))
    fold0 = {r["patient"] for r in manifest if r["split"] == "train" and r["fold"] == "0"}
    calibrated_on = {r["patient"] for r in csv.DictReader((run / "calibration" / "cohort.csv").open())}
    assert calibrated_on == fold0 and record["volumes"] == len(fold0) >= 2
    assert "calibrated on the" in job.message and Path(summary["report"]).is_file()
    assert pipeline.logic.getParameterNode().modelPath == str(job.result.model)

    detect = _run(pipeline.logic.detect(pipeline.held.volume, str(job.result.model),
                                        outFolder=pipeline.work / "detect-calibrated",
                                        extraArgs=Scenario.DETECT_ARGS), "detect")
    assert detect.result.calibrated and "calibrated probability of a lesion" in detect.result.summary()
    doc = json.loads(findOutputs(pipeline.work / "detect-calibrated").json.read_text(encoding="utf-8"))
    expected = Platt(*record["volume"])(doc["volume_logit"])
    assert np.isclose(detect.result.volumeScore, expected, rtol=0, atol=1e-5)

    # The panel's "Heatmap scale": 'auto' (the default) scaled the calibrated model's map by the
    # volume's probability; 'relative' gives the same volume the paper's display, its own maximum at 1.
    assert pipeline.logic.getParameterNode().heatmapScale == "auto"
    assert doc["heatmap_scale"] == pytest.approx(detect.result.volumeScore, abs=1e-6)
    scaled = slicer.util.arrayFromVolume(detect.result.heatmap).max()   # the volume's one heatmap node is reused
    pipeline.logic.getParameterNode().heatmapScale = "relative"
    try:
        relative = _run(pipeline.logic.detect(pipeline.held.volume, str(job.result.model),
                                              outFolder=pipeline.work / "detect-relative",
                                              extraArgs=Scenario.DETECT_ARGS), "detect, relative heatmap")
    finally:
        pipeline.logic.getParameterNode().heatmapScale = "auto"
    other = json.loads(findOutputs(pipeline.work / "detect-relative").json.read_text(encoding="utf-8"))
    assert other["heatmap_scale"] == 1.0 and other["volume_logit"] == doc["volume_logit"]
    full = slicer.util.arrayFromVolume(relative.result.heatmap).max()
    assert full == pytest.approx(1.0, abs=1 / 255)
    assert scaled == pytest.approx(doc["heatmap_scale"] * full, abs=2 / 255)  # stored in 256 levels


def test_the_panels_no_data_value_reaches_detect_and_a_bad_one_is_refused_by_name(pipeline):
    """The panel's "No-data value" (parameter ``noDataValue``) becomes ``--no-data-value``; text that
    is not a finite number stops before a process starts, naming what was typed."""
    import json
    parameters = pipeline.logic.getParameterNode()
    model = parameters.modelPath
    try:
        for bad in ("zero", "nan", "inf"):
            parameters.noDataValue = bad
            with pytest.raises(BlcamError, match=f"No-data value '{bad}' is not a finite number"):
                pipeline.logic.detect(pipeline.held.volume, model, extraArgs=Scenario.DETECT_ARGS)
        parameters.noDataValue = " 0 "
        _run(pipeline.logic.detect(pipeline.held.volume, model, outFolder=pipeline.work / "detect-no-data",
                                   extraArgs=Scenario.DETECT_ARGS), "detect with a no-data value")
    finally:
        parameters.noDataValue = ""
    doc = json.loads(findOutputs(pipeline.work / "detect-no-data").json.read_text(encoding="utf-8"))
    assert doc["settings"]["no_data_value"] == 0.0
    plain = json.loads(findOutputs(pipeline.work / "detect").json.read_text(encoding="utf-8"))
    assert plain["settings"]["no_data_value"] is None
