"""The Slicer module's Logic on real MRML (slicer-core): state, cases, colours, background runs.

No mocks of slicer: scenes, volumes, markups, transforms and storage are Slicer's own classes.
The end-to-end export → train → Detect scenario is in ``test_slicer_pipeline.py``.
"""

from __future__ import annotations

import csv
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from _headless import createScene
from _slicer_fixtures import assert_cancel_kills_tree
from blcam.cohort import read_cohort
from blcam.errors import BlcamError
from blcam.io.points import read_points
from blcam.io.volume import read_volume
from BreastLesionCAMLib import Parameters
from BreastLesionCAMLib.ColorTable import getOrCreateInfernoColorTable, infernoColors
from BreastLesionCAMLib.Logic import BreastLesionCAMLogic
from BreastLesionCAMLib.ProcessRunner import ProcessRunner, progressFraction
from BreastLesionCAMLib.Scenario import addPhantomCase, addTransform, rasToIJK

ANISOTROPIC = (0.3, 0.25, 0.6)  # mm (i, j, k), like ABUS: coarser between slices


def save_and_reload(headless, folder):
    """Save the scene as a Slicer data bundle, then open it in a brand-new headless Slicer."""
    folder.mkdir(parents=True, exist_ok=True)
    assert headless.appLogic.SaveSceneToSlicerDataBundleDirectory(str(folder), None)
    mrml = next(folder.glob("*.mrml"))
    fresh = createScene()
    fresh.scene.SetURL(str(mrml))
    assert fresh.scene.Import()
    return fresh


def test_parameter_node_round_trips_through_scene_save_and_load(headless, tmp_path):
    case = addPhantomCase(headless.scene, "Left breast", 1, lesions=1)
    logic = BreastLesionCAMLogic()
    p = logic.getParameterNode()
    assert p.epochs == 250 and p.heatmapOpacity == 0.3 and p.volumeLabel == "lesion"  # defaults
    p.inputVolume, p.centres = case.volume, case.centres
    p.patientId, p.volumeLabel, p.epochs, p.learningRate = "P042", "healthy", 17, 3e-4
    p.datasetFolder, p.device, p.arch = str(tmp_path / "ds"), "cpu", "resnet10"
    with pytest.raises(ValueError):
        p.volumeLabel = "maybe"  # choices are enforced, as in Slicer's wrapper
    with pytest.raises(ValueError):
        p.heatmapOpacity = 1.5

    fresh = save_and_reload(headless, tmp_path / "bundle")
    try:
        assert fresh.scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
        q = BreastLesionCAMLogic().getParameterNode()
        assert q.parameterNode.GetScene() is fresh.scene
        assert (q.patientId, q.volumeLabel, q.epochs, q.device, q.arch) == ("P042", "healthy", 17, "cpu", "resnet10")
        assert q.learningRate == pytest.approx(3e-4)
        assert q.datasetFolder == str(tmp_path / "ds")
        assert q.inputVolume.GetName() == "Left breast" and q.inputVolume.GetImageData() is not None
        assert q.centres.GetNumberOfControlPoints() == 1
        assert q.heatmapVolume is None
    finally:
        fresh.close()


def test_parameter_choices_match_the_core_package(headless):
    from blcam.cohort import LABELS
    from blcam.detect.pipeline import HEATMAP_MODES
    from blcam.model import ARCHS
    assert Parameters.ARCHS == tuple(ARCHS)
    assert Parameters.LABELS == tuple(LABELS)
    assert Parameters.HEATMAP_SCALES == tuple(HEATMAP_MODES)
    p = BreastLesionCAMLogic().getParameterNode()
    for device in ("cpu", "cuda", "cuda:1", "mps", "auto"):  # a GPU by its index, as the panel lists it
        p.device = device
        assert p.device == device
    with pytest.raises(ValueError, match="device 'cuda:0 \\(NVIDIA H200\\)'"):  # a label is not a name
        p.device = "cuda:0 (NVIDIA H200)"


def test_add_case_writes_volume_centres_and_cohort_row(headless, tmp_path):
    scene = headless.scene
    tilt = addTransform(scene)
    lesion = addPhantomCase(scene, "P1 left", 11, lesions=1, flipI=True, transform=tilt, spacingIJK=ANISOTROPIC)
    healthy = addPhantomCase(scene, "P2 right", 12)
    ds = tmp_path / "dataset"
    ds.mkdir()
    (ds / "cohort.csv").write_text("patient,volume,label,annotation,birads\n")  # extra column kept
    logic = BreastLesionCAMLogic()

    first = logic.addCase(lesion.volume, ds, "P1", "lesion", lesion.centres)
    second = logic.addCase(healthy.volume, ds, "P2", "healthy")
    assert (first.replaced, second.replaced) == (False, False)
    rows = list(csv.DictReader((ds / "cohort.csv").open()))
    assert [(r["patient"], r["label"]) for r in rows] == [("P1", "lesion"), ("P2", "healthy")]
    assert list(rows[0]) == ["patient", "volume", "label", "annotation", "birads"]

    cohort = read_cohort(ds / "cohort.csv")  # the CLI's own validation accepts it
    row = cohort.rows[0]
    # The written volume carries the world geometry: the true lesion centroid, taken through
    # the written file's geometry, lands on the annotated centre (transform hardened, LPS).
    array, geometry = read_volume(row.volume)
    np.testing.assert_array_equal(array, slicer.util.arrayFromVolume(lesion.volume))
    lps = read_points(row.annotation)
    np.testing.assert_allclose(lps, lesion.centresRAS * [-1, -1, 1], atol=1e-4)
    centroid_ijk = rasToIJK(lesion.volume, lesion.centresRAS)
    np.testing.assert_allclose(geometry.lps_to_index(lps), centroid_ijk, atol=1e-4)
    k, j, i = np.round(centroid_ijk[0][::-1]).astype(int)
    assert lesion.mask[k, j, i] > 0

    # Re-adding after moving the centre replaces files and row: no duplicate.
    lesion.centres.SetNthControlPointPositionWorld(0, *(lesion.centresRAS[0] + [0.0, 0.0, 1.0]))
    again = logic.addCase(lesion.volume, ds, "P1", "lesion", lesion.centres)
    assert again.replaced
    rows = list(csv.DictReader((ds / "cohort.csv").open()))
    assert len(rows) == 2
    assert read_points(ds / rows[0]["annotation"])[0][2] == pytest.approx(lps[0][2] + 1.0, abs=1e-4)


@pytest.mark.parametrize("problem", ["no centres", "healthy with centres", "outside", "bad patient", "no folder"])
def test_add_case_refuses_inconsistent_input(headless, tmp_path, problem):
    case = addPhantomCase(headless.scene, "vol", 3, lesions=1)
    logic = BreastLesionCAMLogic()
    args = {"volumeNode": case.volume, "datasetFolder": tmp_path, "patientId": "P9", "label": "lesion",
            "centresNode": case.centres}
    if problem == "no centres":
        args["centresNode"] = None
    elif problem == "healthy with centres":
        args["label"] = "healthy"
    elif problem == "outside":
        case.centres.SetNthControlPointPositionWorld(0, 500.0, 500.0, 500.0)
    elif problem == "bad patient":
        args["patientId"] = "P,9"
    else:
        args["datasetFolder"] = ""
    with pytest.raises(BlcamError):
        logic.addCase(**args)
    assert not (tmp_path / "cohort.csv").exists()


def test_colour_table_is_inferno_and_created_once(headless):
    matplotlib = pytest.importorskip("matplotlib")
    table = getOrCreateInfernoColorTable(headless.scene)
    assert getOrCreateInfernoColorTable(headless.scene) is table
    assert table.GetNumberOfColors() == 256
    ours = np.array([table.GetLookupTable().GetTableValue(n)[:3] for n in range(256)])
    reference = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3]
    assert np.abs(ours - reference).max() < 0.03
    assert np.allclose(ours, infernoColors(), atol=1 / 255)  # the lookup table stores 8 bits


def test_heatmap_uses_slicers_own_inferno_where_the_scene_has_it(headless, tmp_path):
    """Slicer loads its colour files as singleton nodes (``Inferno.txt`` becomes the node
    ``vtkMRMLColorTableNodeFileInferno.txt``); slicer-core loads none. Made the way Slicer's
    colour logic makes it, that node is what the heatmap shows, and the module adds no table."""
    from BreastLesionCAMLib.ColorTable import (
        SLICER_INFERNO_ID,
        findInfernoColorTable,
        heatmapColorTable,
        isInfernoColorNode,
    )
    from BreastLesionCAMLib.Results import setHeatmapDisplay
    scene = headless.scene
    assert scene.GetNodeByID(SLICER_INFERNO_ID) is None  # slicer-core: the module's own table
    assert heatmapColorTable(scene) is findInfernoColorTable(scene) is not None

    fresh = createScene()
    try:
        colors = "".join(f"{n} inferno{n} {' '.join(str(round(255 * c)) for c in rgb)} 255\n"
                         for n, rgb in enumerate(infernoColors()))
        (tmp_path / "Inferno.txt").write_text(f"# 256 values\n{colors}", encoding="utf-8")
        slicers = slicer.vtkMRMLColorTableNode()
        slicers.SetTypeToFile()
        slicers.SetSingletonTag("FileInferno.txt")
        slicers.SetName("Inferno")
        storage = slicer.vtkMRMLColorTableStorageNode()
        storage.SetFileName(str(tmp_path / "Inferno.txt"))
        assert storage.ReadData(slicers)
        fresh.scene.AddNode(slicers)
        assert slicers.GetID() == SLICER_INFERNO_ID
        heat = addPhantomCase(fresh.scene, "heat", 2).volume
        setHeatmapDisplay(heat, 0.2)
        assert heat.GetDisplayNode().GetColorNode() is slicers and isInfernoColorNode(slicers)
        assert findInfernoColorTable(fresh.scene) is None  # no second, module-made table
    finally:
        fresh.close()
        slicer.mrmlScene = headless.scene


def _script(tmp_path, body: str):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, "-u", str(path)]


def test_runner_turns_output_into_events_log_and_error(tmp_path):
    """Protocol records on stdout (blcam.cli.progress) are events; everything else is log."""
    args = _script(tmp_path, """
        import json, sys
        print(json.dumps({"event": "progress", "stage": "epoch", "fraction": 0.5, "epoch": 1, "epochs": 2,
                          "train_loss": 0.5}))
        print(json.dumps({"no": "event key"}))
        print("export:  50%|#####     | 2/4 [00:01<00:01, 2.0vol/s]", file=sys.stderr, flush=True)
        print("plain log line")
        print(json.dumps({"event": "error", "message": "bad label"}))
        print("blcam train: error: patches/manifest.csv row 3: bad label", file=sys.stderr)
        sys.exit(2)
    """)
    seen, logs, done = [], [], []
    runner = ProcessRunner(args, seen.append, logs.append, done.append).start()
    assert runner.wait(timeout=30) == 2
    assert [e["event"] for e in seen] == ["progress", "error"]
    assert seen[0]["train_loss"] == 0.5 and runner.events == [seen[1]]
    assert "plain log line" in logs and '{"no": "event key"}' in logs
    assert any("2/4" in line for line in logs)             # a tqdm bar is log, not progress
    assert done == [runner] and not runner.succeeded and not runner.cancelled
    assert runner.errorMessage() == "bad label"          # the error record, before stderr's last line


def test_runner_cancel_kills_the_whole_process_tree_within_seconds(tmp_path):
    args = _script(tmp_path, """
        import json, subprocess, sys, time
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)]
        print(json.dumps({"event": "started", "pids": [k.pid for k in kids]}), flush=True)
        time.sleep(600)
    """)
    runner = ProcessRunner(args).start()
    deadline = time.monotonic() + 30
    while runner.lastEvent is None and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    pids = [runner.pid] + runner.lastEvent["pids"]
    assert all(psutil.pid_exists(p) for p in pids)
    assert_cancel_kills_tree(runner, pids)


def test_progress_fraction_reads_the_one_protocol():
    assert progressFraction({"event": "progress", "stage": "epoch", "fraction": 0.25, "epoch": 3}) == 0.25
    assert progressFraction({"event": "progress", "stage": "map", "fraction": 1.7}) == 1.0
    assert progressFraction({"event": "progress", "stage": "export", "done": 2, "total": 4}) is None  # no fraction
    assert progressFraction({"event": "done", "model": "m.safetensors", "fraction": 1.0}) is None
    assert progressFraction({"event": "progress", "fraction": True}) is None


def test_dataset_summary_and_refusals_before_any_process_starts(headless, tmp_path):
    from BreastLesionCAMLib.Dataset import summarizeCohort
    logic = BreastLesionCAMLogic()
    assert summarizeCohort("") == "No dataset folder chosen."
    assert summarizeCohort(tmp_path) == "Empty dataset: add the first case."
    with pytest.raises(BlcamError, match="no cohort yet"):
        logic.exportPatches(tmp_path)
    with pytest.raises(BlcamError, match="export patches first"):
        logic.startTraining(tmp_path / "patches")
    case = addPhantomCase(headless.scene, "vol", 5, lesions=1)
    with pytest.raises(BlcamError, match="not found"):
        logic.detect(case.volume, tmp_path / "missing.safetensors")
    logic.addCase(case.volume, tmp_path, "P1", "lesion", case.centres)
    logic.addCase(addPhantomCase(headless.scene, "h", 6).volume, tmp_path, "P2", "healthy")
    assert summarizeCohort(tmp_path) == ("2 volume(s) of 2 patient(s): 1 lesion, 1 healthy; "
                                         "1 annotated volume(s).")


def test_detect_outputs_load_on_the_inputs_grid_under_its_transform(headless, tmp_path):
    """Results loading alone, on files written like ``blcam detect`` writes them."""
    from blcam.io.points import write_markups
    from blcam.io.volume import write_volume
    from BreastLesionCAMLib.NodeIO import controlPointsWorldRAS, ijkToRAS, writeVolumeNode
    from BreastLesionCAMLib.Results import loadResults
    scene = headless.scene
    case = addPhantomCase(scene, "tilted", 21, lesions=1, flipI=True, transform=addTransform(scene),
                          spacingIJK=ANISOTROPIC)
    sent = writeVolumeNode(case.volume, tmp_path / "in" / "tilted.nrrd")
    heat = (case.mask > 0).astype(np.float32) * 0.9
    write_volume(tmp_path / "out" / "tilted_heatmap.nrrd", heat, sent)
    lps = case.centresRAS * [-1, -1, 1]
    write_markups(tmp_path / "out" / "tilted_candidates.mrk.json", lps, ["lesion-1"], ["0.87"])
    (tmp_path / "out" / "tilted_candidates.csv").write_text("label,score,size_i_mm,size_j_mm\nlesion-1,0.87,5.5,3.25\n")

    result = loadResults(case.volume, tmp_path / "out", sent, opacity=0.3, threshold=0.25)
    np.testing.assert_array_equal(ijkToRAS(result.heatmap), ijkToRAS(case.volume))
    assert result.heatmap.GetTransformNodeID() == case.volume.GetTransformNodeID()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result.heatmap), heat)
    np.testing.assert_allclose(controlPointsWorldRAS(result.candidates), case.centresRAS, atol=1e-4)
    assert result.candidates.GetTransformNodeID() == case.volume.GetTransformNodeID()
    assert result.heatmap.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.25)
    columns = [result.table.GetColumnName(c) for c in range(result.table.GetNumberOfColumns())]
    assert columns == ["Label", "Score", "R", "A", "S", "Size (mm)"]
    assert (result.table.GetCellText(0, 0), float(result.table.GetCellText(0, 1))) == ("lesion-1", 0.87)
    assert result.table.GetCellText(0, 5) == "5.5 × 3.2"

    again = loadResults(case.volume, tmp_path / "out", sent)  # a second Detect reuses the nodes
    assert again.heatmap is result.heatmap and again.candidates is result.candidates
    assert again.candidates.GetNumberOfControlPoints() == 1

    moved = sent.__class__(sent.size, sent.spacing, (0.0, 0.0, 0.0), sent.direction)
    with pytest.raises(BlcamError, match="geometry"):
        loadResults(case.volume, tmp_path / "out", moved)


def test_panel_says_the_models_spacing_and_the_expected_detect_time(headless, tmp_path):
    """Before Detect starts: the model's voxel size, the grid the loaded volume is mapped on and
    the expected seconds; after a Detect, the estimate uses the speed this computer achieved."""
    from _cam_fixtures import random_model
    from blcam.detect.plan import plan_detect
    from blcam.io.resample import grid_at_spacing
    from blcam.model import make_metadata, save_model
    from BreastLesionCAMLib.NodeIO import geometryOf
    case = addPhantomCase(headless.scene, "aniso", 5, spacingIJK=ANISOTROPIC)
    meta = make_metadata("resnet10", "paper", 0.25, (16, 48, 48), (28, 64, 96), spacing=[0.5, 0.5, 0.5])
    save_model(tmp_path / "mm.safetensors", random_model(), meta)
    logic = BreastLesionCAMLogic()
    text = logic.describeDetect(case.volume, str(tmp_path / "mm.safetensors"))
    grid = grid_at_spacing(geometryOf(case.volume), (0.5, 0.5, 0.5))
    plan = plan_detect(meta, geometryOf(case.volume))
    assert "model spacing 0.5 × 0.5 × 0.5 mm" in text and "×".join(map(str, grid.shape)) in text
    assert f"Detect ≈ {plan.expected_seconds():.0f} s on a 2-core laptop CPU" in text
    # A finished Detect's map time becomes this computer's rate.
    out = tmp_path / "det"
    out.mkdir()
    (out / "detections.csv").write_text("name,map_seconds\naniso,3.0\n", encoding="utf-8")
    logic._recordSpeed(case.volume, str(tmp_path / "mm.safetensors"), out)
    assert logic.getParameterNode().detectSecondsPerMvox == pytest.approx((3.0 - plan.io_seconds) / plan.mvox_read)
    again = logic.describeDetect(case.volume, str(tmp_path / "mm.safetensors"))
    assert "Detect ≈ 3 s at this computer's last measured speed" in again
    save_model(tmp_path / "native.safetensors", random_model(),
               make_metadata("resnet10", "paper", 0.25, (16, 48, 48), (28, 64, 96)))
    assert "each volume's own voxels" in logic.describeDetect(case.volume, str(tmp_path / "native.safetensors"))
    assert logic.describeDetect(case.volume, "") == ""
    # Whether the scores it will show are probabilities (a model calibrated by blcam calibrate).
    assert "raw sigmoid, not calibrated" in text
    calibrated = {**meta, "calibration": {"format": "platt-v1", "candidate": [3.0, -2.0], "volume": [4.0, -1.0]}}
    save_model(tmp_path / "calibrated.safetensors", random_model(), calibrated)
    assert "scores are calibrated probabilities" in logic.describeDetect(case.volume,
                                                                         str(tmp_path / "calibrated.safetensors"))
