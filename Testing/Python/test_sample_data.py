"""Sample data: the phantom Sample Data entries generate a cohort locally and load it into real MRML.

The Sample Data module itself (Qt) is not in ``slicer-core``; what its buttons run is
:func:`BreastLesionCAMLib.SamplePhantom.loadSample`, tested here end to end against a real
scene: generation into a cache folder, reuse of the cache, a partly deleted cache made
again, the volume and the lesion centres loaded where the files put them (checked in
physical space against the phantom's own lesion mask), and the registration that must do
nothing without the Sample Data module.
"""

from __future__ import annotations

import inspect
import re
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from vtkmodules.vtkCommonMath import vtkMatrix4x4

from blcam.errors import BlcamError
from blcam.io.volume import read_volume
from BreastLesionCAMLib import SamplePhantom
from BreastLesionCAMLib.NodeIO import controlPointsWorldRAS, matrixToArray, readVolumeFile

MODULE_FILE = Path(__file__).resolve().parents[2] / "BreastLesionCAM" / "BreastLesionCAM.py"
# SampleDataLogic.registerCustomSampleDataSource's parameters in Slicer 5.8 (the oldest supported).
REGISTER_PARAMETERS_5_8 = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                           "thumbnailFileName", "loadFileTypes", "loadFiles", "loadFileProperties", "checksums",
                           "loadFileType"}


def worldRASToIJK(node, pointsRAS) -> np.ndarray:
    """Nearest voxel (i, j, k) of world RAS points (the node has no parent transform)."""
    matrix = vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    m = matrixToArray(matrix)
    pts = np.c_[np.asarray(pointsRAS, float), np.ones(len(pointsRAS))]
    return np.round((pts @ m.T)[:, :3]).astype(int)


def test_lesion_sample_is_generated_then_loaded_as_volume_and_centres(headless, tmp_path):
    started = time.monotonic()
    loaded = SamplePhantom.loadSample(headless.scene, "lesion", tmp_path)
    assert time.monotonic() - started < 60            # "try it within a minute of installing"
    assert loaded.folder == SamplePhantom.sampleFolder(tmp_path, "lesion")
    assert (loaded.folder / "phantom.json").is_file() and (loaded.folder / "cohort.csv").is_file()
    assert loaded.volume.GetName() == "ABUS phantom lesion"
    assert loaded.volume.GetDisplayNode() is not None
    assert loaded.volume.GetStorageNode().GetFileName().startswith(str(loaded.folder))

    row = SamplePhantom.generateSample(tmp_path, "lesion")
    image, geometry = read_volume(row.volume)
    assert loaded.volume.GetImageData().GetDimensions() == geometry.size
    assert slicer.util.arrayFromVolume(loaded.volume).shape == image.shape

    centresRAS = controlPointsWorldRAS(loaded.centres)
    assert len(centresRAS) == len(row.centres_lps) >= 1
    np.testing.assert_allclose(centresRAS, row.centres_lps * [-1, -1, 1], atol=1e-3)   # LPS file → RAS scene
    # Each centre is inside a lesion of the phantom's mask, read through the same loader, and
    # the loaded voxels are the file's voxels at that physical point.
    mask = readVolumeFile(row.volume.parent.parent / "masks" / row.volume.name, headless.scene, "mask")
    maskArray, volumeArray = slicer.util.arrayFromVolume(mask), slicer.util.arrayFromVolume(loaded.volume)
    fileIndex = np.round(geometry.lps_to_index(row.centres_lps)).astype(int)
    for (i, j, k), (fi, fj, fk) in zip(worldRASToIJK(loaded.volume, centresRAS), fileIndex, strict=True):
        assert maskArray[k, j, i] > 0
        assert volumeArray[k, j, i] == image[fk, fj, fi]


def test_healthy_sample_has_no_centres_and_no_lesion(headless, tmp_path):
    loaded = SamplePhantom.loadSample(headless.scene, "healthy", tmp_path)
    assert loaded.centres is None
    assert loaded.volume.GetName() == "ABUS phantom healthy"
    row = SamplePhantom.generateSample(tmp_path, "healthy")
    assert row.label == "healthy" and row.annotation is None
    mask, _ = read_volume(row.volume.parent.parent / "masks" / row.volume.name)
    assert mask.max() == 0
    assert slicer.util.arrayFromVolume(loaded.volume).std() > 10      # speckle, not an empty volume


def test_second_use_reuses_the_cache_and_a_damaged_cache_is_made_again(headless, tmp_path):
    first = SamplePhantom.loadSample(headless.scene, "lesion", tmp_path)
    volumeFile = Path(first.volume.GetStorageNode().GetFileName())
    before = volumeFile.stat().st_mtime_ns, volumeFile.read_bytes()
    second = SamplePhantom.loadSample(headless.scene, "lesion", tmp_path)
    assert volumeFile.stat().st_mtime_ns == before[0]                  # not generated again
    assert second.volume.GetName() != first.volume.GetName()           # a new node, unique name

    volumeFile.unlink()                                                # someone cleaned the cache
    third = SamplePhantom.loadSample(headless.scene, "lesion", tmp_path)
    assert volumeFile.read_bytes() == before[1]                        # fixed seed: the same phantom
    assert third.centres.GetNumberOfControlPoints() == first.centres.GetNumberOfControlPoints()


def test_unknown_sample_label_is_named(headless, tmp_path):
    with pytest.raises(BlcamError, match="sample label 'tumour': unknown; use one of lesion, healthy"):
        SamplePhantom.loadSample(headless.scene, "tumour", tmp_path)


def test_registration_does_nothing_without_the_sample_data_module():
    with pytest.raises(ImportError):
        import SampleData  # noqa: F401  (slicer-core has no Sample Data module)
    assert SamplePhantom.registerSampleData() is False


def test_sources_name_the_two_phantoms_with_thumbnails_and_a_generating_downloader(tmp_path):
    names = [s.name for s in SamplePhantom.SAMPLES]
    assert names == ["ABUS phantom with lesions", "healthy ABUS phantom"]
    for sample in SamplePhantom.SAMPLES:
        args = SamplePhantom.sourceArguments(sample, tmp_path)
        assert set(args) <= REGISTER_PARAMETERS_5_8
        assert args["category"] == "BreastLesionCAM" and args["sampleName"] == sample.name
        assert args["uris"].startswith("file://") and args["uris"].endswith("/cohort.csv")
        thumbnail = Path(args["thumbnailFileName"])
        header = thumbnail.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (260, 280)
        downloader = args["customDownloader"]
        assert downloader.args == (sample.label,)                        # Sample Data calls it with the source
        assert list(inspect.signature(downloader).parameters) == ["source"]


def test_module_registers_the_samples_when_slicer_has_started():
    text = MODULE_FILE.read_text(encoding="utf-8")
    assert re.search(r'slicer\.app\.connect\("startupCompleted\(\)",\s*registerSampleData\)', text)
    assert "from BreastLesionCAMLib.SamplePhantom import registerSampleData" in text


def test_detect_runs_on_the_sample_with_the_bundled_demo_model_and_points_at_its_lesion(headless, tmp_path):
    """"Try Detect within a minute of installing": the sample loads, the bundled phantom model
    (make demo's, 0.5 mm, float16 weights) becomes the current model only when none is chosen,
    and a real Detect on the sample's ABUS-like grid puts its best candidate in the lesion."""
    from blcam.model import load_model, model_spacing
    from blcam.score_calibration import ScoreCalibration
    from BreastLesionCAMLib.Jobs import JobState
    from BreastLesionCAMLib.Logic import BreastLesionCAMLogic
    model, meta = load_model(SamplePhantom.DEMO_MODEL, "cpu")      # safetensors: nothing unpickled
    assert model_spacing(meta) == (0.5, 0.5, 0.5) and "not for patients" in meta["sample_model"]
    # Its scores are probabilities, fitted on validation phantoms it never trained on (blcam calibrate).
    assert ScoreCalibration.from_metadata(meta).fitted and "scores calibrated" in meta["sample_model"]
    loaded = SamplePhantom.loadSample(headless.scene, "lesion", tmp_path)
    logic = BreastLesionCAMLogic()
    assert logic.useDemoModel(loaded.volume)
    p = logic.getParameterNode()
    assert p.modelPath == str(SamplePhantom.DEMO_MODEL) and p.inputVolume is loaded.volume
    assert not logic.useDemoModel()                                  # a chosen model is never replaced
    started = time.monotonic()
    job = logic.detect(loaded.volume, p.modelPath, device="cpu")
    assert job.wait(120) is JobState.SUCCEEDED, job.message
    assert time.monotonic() - started < 60
    assert job.result.calibrated and "calibrated probability of a lesion" in job.result.summary()
    row = SamplePhantom.generateSample(tmp_path, "lesion")
    mask = readVolumeFile(row.volume.parent.parent / "masks" / row.volume.name, headless.scene, "mask")
    (i, j, k), = np.round(worldRASToIJK(loaded.volume, controlPointsWorldRAS(job.result.candidates)[:1])).astype(int)
    assert slicer.util.arrayFromVolume(mask)[k, j, i] > 0
