"""Batch Detect's Slicer side with real MRML (slicer-core) on a real ``blcam detect`` run: a
folder of volumes → one table, most suspicious first → a row opens its volume on its grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from _training_fixtures import (
    blob_dataset,
    cohort_subset,
    one_thread,  # noqa: F401 (autouse: the shared run is trained as every other module trains it)
    trained_run,
)
from blcam.detect import DetectSettings, detect
from blcam.errors import BlcamError
from blcam.io.volume import Geometry, write_volume
from BreastLesionCAMLib.Batch import batchInputs, batchRow, loadBatchTable, openBatchRow
from BreastLesionCAMLib.NodeIO import geometryOf

SHAPE = (32, 72, 72)


def test_a_folder_of_volumes_becomes_a_sorted_table_whose_rows_open_their_volumes(headless, tmp_path):
    folder = tmp_path / "worklist"
    geometry = Geometry(SHAPE[::-1], (0.4, 0.5, 0.6), (10.0, -20.0, 5.0), (0, 1, 0, 1, 0, 0, 0, 0, -1))
    write_volume(folder / "b_clear.nrrd", blob_volume(SHAPE, [], seed=1), geometry)
    write_volume(folder / "a_blob.nii.gz", blob_volume(SHAPE, [(16, 36, 36)], seed=2), geometry)
    write_volume(folder / "c_two.mha", blob_volume(SHAPE, [(12, 20, 20), (20, 50, 50)], seed=3), geometry)
    (folder / "notes.txt").write_text("not a volume", encoding="utf-8")
    inputs = batchInputs(folder)
    assert [p.name for p in inputs] == ["a_blob.nii.gz", "b_clear.nrrd", "c_two.mha"]
    model = save_test_model(tmp_path / "m.safetensors", dark_blob_model())
    detect(model, inputs, tmp_path / "out", DetectSettings(refine=0, overlays=0), progress=False)

    table = loadBatchTable(headless.scene, tmp_path / "out")
    rows = [batchRow(table, n) for n in range(table.GetTable().GetNumberOfRows())]
    assert len(rows) == 3 and rows[-1]["Name"] == "b_clear"          # the volume without a lesion last
    assert [r["Score"] for r in rows] == sorted((r["Score"] for r in rows), reverse=True)
    node, out, name = openBatchRow(table, 0)
    assert out == (tmp_path / "out").resolve() and (out / f"{name}_heatmap.nrrd").is_file()
    g = geometryOf(node)
    assert g.size == geometry.size and np.allclose(g.spacing, geometry.spacing)
    assert np.allclose(g.origin, geometry.origin) and np.allclose(g.direction, geometry.direction)
    assert openBatchRow(table, 0)[0] is node                            # a second click reuses the node
    with pytest.raises(BlcamError, match="row 4 is not in the batch table"):
        batchRow(table, 3)


def test_batch_inputs_refuse_what_detect_cannot_read(tmp_path):
    with pytest.raises(BlcamError, match="holds no volume file"):
        batchInputs(tmp_path)
    with pytest.raises(BlcamError, match="not a folder of volumes or a cohort CSV"):
        batchInputs(tmp_path / "missing")
    (tmp_path / "cohort.csv").write_text("patient,volume,label,annotation\n", encoding="utf-8")
    assert batchInputs(tmp_path / "cohort.csv") == [tmp_path / "cohort.csv"]
    with pytest.raises(BlcamError, match="detections.csv: missing"):
        loadBatchTable(None, tmp_path)


def test_batch_detect_through_the_logic_then_open_review_and_add_the_case(headless, tmp_path):
    """The panel's path: Detect all (a real background process) → the score table → a row
    opens with its heatmap and candidates → verdicts → "Add reviewed case" files it."""
    import csv

    from BreastLesionCAMLib.Jobs import JobState
    from BreastLesionCAMLib.Logic import BreastLesionCAMLogic
    from BreastLesionCAMLib.Review import verdicts
    folder = tmp_path / "worklist"
    geometry = Geometry(SHAPE[::-1], (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(folder / "blob.nrrd", blob_volume(SHAPE, [(16, 36, 36)], seed=4), geometry)
    write_volume(folder / "clear.nrrd", blob_volume(SHAPE, [], seed=5), geometry)
    model = save_test_model(tmp_path / "m.safetensors", dark_blob_model())
    logic = BreastLesionCAMLogic()
    job = logic.batchDetect(folder, model, tmp_path / "out", device="cpu", extraArgs=("--refine", "0"))
    other = slicer.util.addVolumeFromArray(np.zeros((4, 4, 4), np.uint8), name="other")
    with pytest.raises(BlcamError, match="is running on cpu"):      # one heavy job per device
        logic.detect(other, model, device="cpu")
    assert job.wait(300) is JobState.SUCCEEDED, job.message
    p = logic.getParameterNode()
    assert p.batchTable is job.result and batchRow(job.result, 0)["Name"] == "blob"
    result = logic.openBatchResult(job.result, 0)
    assert p.inputVolume.GetName() == "blob" and result.candidates.GetNumberOfControlPoints() > 0
    assert slicer.util.arrayFromVolume(result.heatmap).shape == SHAPE
    assert logic.reviewCandidate(0, "lesion") in (None, 1)
    if result.candidates.GetNumberOfControlPoints() > 1:
        logic.reviewCandidate(1, "not lesion")
    assert verdicts(result.candidates)[0] == "lesion"
    record = logic.addReviewedCase(tmp_path / "dataset", "B1")
    assert record.label == "lesion" and record.centres >= 1
    rows = list(csv.DictReader((tmp_path / "dataset" / "cohort.csv").open(encoding="utf-8")))
    assert [r["patient"] for r in rows] == ["B1"]


def test_calibrate_on_a_batch_of_an_annotated_cohort_makes_a_calibrated_copy_the_current_model(
        headless, tmp_path, tmp_path_factory):
    """A model from elsewhere, made to mean probabilities on this site's patients: Detect all on
    an annotated cohort CSV of patients it never trained on, then "Calibrate the model on this
    batch". The fit is ``blcam calibrate``'s, on a copy that becomes the current model; the
    model file is untouched, and the light job runs beside a CPU Detect."""
    from blcam.evaluation.recalibration import calibrate_model
    from blcam.model import read_metadata
    from BreastLesionCAMLib.Jobs import JobState
    from BreastLesionCAMLib.Logic import BreastLesionCAMLogic
    model = trained_run(tmp_path_factory) / "model.safetensors"
    val, _ = cohort_subset(tmp_path, blob_dataset(tmp_path_factory), "val.csv",
                           lambda r: r["split"] == "train" and r["fold"] == "0")
    logic = BreastLesionCAMLogic()
    p = logic.getParameterNode()
    p.modelPath, p.batchInput, p.batchOutput = str(model), str(val), str(tmp_path / "out")
    with pytest.raises(BlcamError, match="run Detect all on the cohort first"):
        logic.calibrateOnBatch()
    batch = logic.batchDetect(val, model, tmp_path / "out", device="cpu")
    assert batch.wait(300) is JobState.SUCCEEDED, batch.message
    with pytest.raises(BlcamError, match="calibration needs a cohort CSV"):
        logic.calibrateOnBatch(cohortCsv=tmp_path / "out")
    volume = slicer.util.addVolumeFromArray(blob_volume(SHAPE, [(16, 36, 36)], seed=6), name="busy")
    busy = logic.detect(volume, model, device="cpu", extraArgs=("--refine", "0"))
    job = logic.calibrateOnBatch()                            # not refused: a fit, no device
    assert job.wait(300) is JobState.SUCCEEDED, job.message
    assert busy.wait(300) is JobState.SUCCEEDED, busy.message
    out = tmp_path / "out" / "model-calibrated.safetensors"
    assert job.result.model == out and p.modelPath == str(out)
    assert "calibration" not in read_metadata(model)                    # the model file is not rewritten
    direct = calibrate_model(model, tmp_path / "out", val, tmp_path / "direct.safetensors",
                             report=tmp_path / "direct.json")
    assert read_metadata(out)["calibration"]["candidate"] == direct["calibration"]["candidate"]
    assert read_metadata(out)["calibration"]["volume"] == direct["calibration"]["volume"]
    summary = job.result.calibration
    assert summary["volumes"] == direct["calibration"]["volumes"] and Path(summary["plot"]).is_file()
    assert job.message.startswith("Calibration finished") and "is calibrated on" in job.message
