"""The module's logic: what the panel does, callable from scripts, tests and the Python console.

Methods take MRML nodes and plain values, never widgets, and never import Qt: the same code
runs in Slicer and with only ``slicer-core`` (real MRML, no GUI). The heavy work runs in a
background ``python -m blcam`` process; the methods that start one return a :class:`.Job`
at once. The caller keeps calling ``job.poll()`` (the widget from a ``qt.QTimer``, scripts
through ``job.wait()``), which delivers progress and, at the end, loads results into the
scene on the caller's thread. ``logic.jobs`` (:class:`.JobBoard`) holds the jobs and refuses
a second heavy job on a busy device.

The process runner is a parameter (``BreastLesionCAMLogic(process=...)``, a
:data:`.ProcessFactory`; :class:`.ProcessRunner` by default), so a test or another front end
can run the jobs its own way.

Example (Slicer's Python console or a plain script with slicer-core)::

    logic = BreastLesionCAMLogic()
    logic.addCase(volume, "/data/abus", "P001", "lesion", centres)
    logic.exportPatches("/data/abus").wait()
    run = logic.startTraining("/data/abus/patches", "/data/abus/runs/r1", epochs=50)
    run.wait()                                   # JobState.SUCCEEDED, run.result.model
    detect = logic.detect(volume, logic.getParameterNode().modelPath)
    detect.wait()
    heatmap = detect.result.heatmap              # also logic.getParameterNode().heatmapVolume
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import slicer

from blcam.detect.outputs import SUMMARY_FILE
from blcam.device import check_device_name, concrete_device, device_choices
from blcam.errors import BlcamError

from .Batch import batchInputs, loadBatchTable, openBatchRow
from .Dataset import COHORT_NAME, CaseRecord, addCase, safeName
from .Jobs import NO_DEVICE, CalibrationResult, ExportResult, Job, JobBoard, TrainingResult, describeEpoch
from .NodeIO import geometryOf, writeVolumeNode
from .Parameters import BreastLesionCAMParameterNode
from .ProcessRunner import ProcessFactory, ProcessRunner, blcamCommand
from .Results import DetectionResult, jumpToCandidate, loadResults, setForegroundOpacity, setHeatmapDisplay
from .Review import addReviewedCase, nextUnreviewed, setVerdict
from .Segmentation import CandidateSegment, segmentCandidate

MODULE_NAME = "BreastLesionCAM"


def temporaryFolder(key: str) -> Path:
    """A new, empty folder in Slicer's temporary folder (``slicer.util.tempDirectory``, which
    the user sets in the application settings); the system's outside the Slicer application."""
    if getattr(slicer, "app", None) is not None:
        return Path(slicer.util.tempDirectory(f"{key}-{uuid.uuid4().hex[:8]}-"))
    return Path(tempfile.mkdtemp(prefix=f"{key}-"))


def noDataArgs(text: str) -> tuple[str, ...]:
    """The panel's "No-data value" as ``blcam detect`` options: none when empty; a value that
    is not a finite number is refused here, by name, before a process starts."""
    text = (text or "").strip()
    if not text:
        return ()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BlcamError(f"No-data value '{text}' is not a finite number; leave it empty for none")
    return ("--no-data-value", f"{value:g}")


class BreastLesionCAMLogic:
    """Annotate → export → train → Detect, with the state in the scene's parameter node."""

    moduleName = MODULE_NAME

    def __init__(self, process: ProcessFactory | None = None):
        self.isSingletonParameterNode = True
        self.process: ProcessFactory = process or ProcessRunner
        self.jobs = JobBoard()
        self.lastDetection: DetectionResult | None = None
        self._devices: list[tuple[str, str]] | None = None

    # -- parameter node (same conventions as ScriptedLoadableModuleLogic) --------------
    def getParameterNode(self) -> BreastLesionCAMParameterNode:
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(scene.GenerateUniqueName(MODULE_NAME))
            node = scene.AddNode(node)
        if node.GetAttribute("ModuleName") != MODULE_NAME:
            node.SetAttribute("ModuleName", MODULE_NAME)
        return BreastLesionCAMParameterNode(node)

    # -- devices ---------------------------------------------------------------------
    def deviceChoices(self) -> list[tuple[str, str]]:
        """``(name, label)`` of each device this computer can run jobs on: auto, cpu, each
        CUDA GPU by name, mps (:func:`blcam.device.available_devices`). Before PyTorch is
        installed: auto and cpu (asked again later, not remembered)."""
        if self._devices is None:
            try:
                from blcam.device import available_devices
                self._devices = available_devices()
            except ImportError:
                return device_choices()
        return self._devices

    def concreteDevice(self, name: str) -> str:
        """The device a job given ``name`` runs on ('auto' and 'cuda' resolved)."""
        check_device_name(name)
        return concrete_device(name, [choice for choice, _ in self.deviceChoices()])

    def _start(self, kind: str, args, device: str, onEvent, onLog, onFinished, **jobOptions) -> Job:
        job = Job(kind, args, self.process, device, **jobOptions).listen(onEvent, onLog, onFinished)
        return self.jobs.add(job).start(slicer.mrmlScene)

    def useDemoModel(self, volumeNode=None) -> bool:
        """With no model chosen yet, make the bundled phantom demo model the current one (and
        ``volumeNode`` the input), so Detect runs on the sample data at once; True if it did."""
        from .SamplePhantom import DEMO_MODEL
        p = self.getParameterNode()
        if volumeNode is not None and p.inputVolume is None:
            p.inputVolume = volumeNode
        if p.modelPath or not DEMO_MODEL.is_file():
            return False
        p.modelPath = str(DEMO_MODEL)
        return True

    # -- case and dataset ------------------------------------------------------------
    def addCase(self, volumeNode, datasetFolder, patientId: str, label: str, centresNode=None) -> CaseRecord:
        """Write the volume, its lesion centres and its cohort row (see :mod:`.Dataset`)."""
        return addCase(volumeNode, datasetFolder, patientId, label, centresNode)

    def exportPatches(self, datasetFolder, outFolder=None, extraArgs=(), onEvent=None, onLog=None,
                      onFinished=None) -> Job:
        """Run ``blcam export`` on the dataset's cohort (a CPU job); patches go to ``<dataset>/patches``."""
        cohort = Path(datasetFolder or "") / COHORT_NAME
        if not str(datasetFolder or "").strip() or not cohort.is_file():
            raise BlcamError(f"{cohort}: no cohort yet; add cases to the dataset first")
        out = Path(outFolder) if outFolder else Path(datasetFolder) / "patches"
        args = blcamCommand("export", cohort, "--out", out, "--progress-json", *extraArgs)
        return self._start("export", args, "cpu", onEvent, onLog, onFinished, complete=lambda job: ExportResult(out))

    # -- training --------------------------------------------------------------------
    def startTraining(self, patchesFolder, runFolder=None, arch: str = "resnet18", epochs: int = 250,
                      batchSize: int = 14, learningRate: float = 1e-3, device: str = "auto",
                      calibrate: bool = False, extraArgs=(), onEvent=None, onLog=None, onFinished=None) -> Job:
        """Run ``blcam train`` with JSON progress; when it succeeds, its model becomes the
        current one (``job.result``: :class:`.TrainingResult`).

        ``calibrate``: train on every training fold but the first and fit the score calibration
        on that fold's patients (``--fold 0 --calibrate``), so Detect's scores are probabilities.
        The model then trains on a fold fewer; the fit needs lesion and healthy volumes, and hits,
        in that fold, and the job fails naming what was missing."""
        patches = Path(patchesFolder or "")
        if not (patches / "manifest.csv").is_file():
            raise BlcamError(f"{patches}: no exported patches (manifest.csv); export patches first")
        concrete = self.concreteDevice(device)
        self.jobs.checkFree("train", concrete)
        run = Path(runFolder) if runFolder else patches.parent / "runs" / time.strftime("run-%Y%m%d-%H%M%S")
        calibration = ("--fold", 0, "--calibrate") if calibrate else ()
        args = blcamCommand("train", patches, "--out", run, "--arch", arch, "--epochs", int(epochs),
                            "--batch-size", int(batchSize), "--lr", repr(float(learningRate)),
                            "--device", concrete, "--progress-json", *calibration, *extraArgs)

        def complete(job) -> TrainingResult:
            done = next((e for e in reversed(job.process.events) if e.get("event") == "done"), {})
            model = done.get("model")
            if not model:
                raise BlcamError("blcam train ended without naming its model file")
            parameters = self.getParameterNode()
            parameters.modelPath = str(model)
            parameters.runFolder = str(run)
            return TrainingResult(Path(model), run, done.get("calibration"))

        return self._start("train", args, concrete, onEvent, onLog, onFinished, complete=complete,
                           describe=describeEpoch)

    # -- detect ----------------------------------------------------------------------
    def detect(self, volumeNode, modelPath, outFolder=None, device: str = "auto", opacity: float | None = None,
               threshold: float | None = None, extraArgs=(), onEvent=None, onLog=None,
               onFinished=None, heatmapScale: str | None = None) -> Job:
        """Run ``blcam detect`` on ``volumeNode``; when it ends, the heatmap, candidates and
        table are in the scene (``job.result``: :class:`.DetectionResult`) and shown in the
        slice views. The input copy, and the outputs unless ``outFolder`` is given, live in a
        temporary folder that is removed when the job ends. ``heatmapScale`` (default: the
        panel's) is ``blcam detect --heatmap``."""
        if volumeNode is None:
            raise BlcamError("choose the volume to run Detect on")
        if not modelPath or not Path(modelPath).is_file():
            raise BlcamError(f"model file '{modelPath}' not found; train a model or choose one")
        concrete = self.concreteDevice(device)
        self.jobs.checkFree("detect", concrete)
        name = volumeNode.GetName()
        work = temporaryFolder("BreastLesionCAM-Detect")
        out = Path(outFolder) if outFolder else work / "out"
        try:
            sentGeometry = writeVolumeNode(volumeNode, work / f"{safeName(name)}.nrrd", compress=False)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        parameters = self.getParameterNode()
        # PNGs into a folder that is removed would cost time (half of a small volume's) for nothing
        pictures = () if outFolder else ("--no-pictures",)
        args = blcamCommand("detect", modelPath, work / f"{safeName(name)}.nrrd", "--out", out,
                            "--device", concrete, "--heatmap", heatmapScale or parameters.heatmapScale,
                            *noDataArgs(parameters.noDataValue), *pictures, "--progress-json", *extraArgs)
        opacity = parameters.heatmapOpacity if opacity is None else opacity
        threshold = parameters.heatmapThreshold if threshold is None else threshold

        def complete(job) -> DetectionResult:
            if volumeNode.GetScene() is None:
                raise BlcamError(f"the input volume '{name}' was removed from the scene while Detect ran")
            result = loadResults(volumeNode, out, sentGeometry, opacity, threshold)
            p = self.getParameterNode()
            p.heatmapVolume, p.candidates, p.candidateTable = result.heatmap, result.candidates, result.table
            self._recordSpeed(volumeNode, modelPath, out)
            self.lastDetection = result if outFolder else dataclasses.replace(result, folder=None)
            return self.lastDetection

        return self._start("detect", args, concrete, onEvent, onLog, onFinished, complete=complete,
                           cleanup=lambda: shutil.rmtree(work, ignore_errors=True))

    def batchDetect(self, inputPath, modelPath, outFolder, device: str = "auto", extraArgs=(), onEvent=None,
                    onLog=None, onFinished=None, heatmapScale: str | None = None) -> Job:
        """Run ``blcam detect`` on every volume of a folder or a cohort CSV (:mod:`.Batch`);
        when it ends, ``job.result`` is the table of volume scores, most suspicious first, and
        the parameter node's ``batchTable``. Outputs stay in ``outFolder`` (rows open from there)."""
        if not modelPath or not Path(modelPath).is_file():
            raise BlcamError(f"model file '{modelPath}' not found; train a model or choose one")
        if not str(outFolder or "").strip():
            raise BlcamError("choose a folder for the batch Detect outputs")
        inputs = batchInputs(inputPath)
        concrete = self.concreteDevice(device)
        self.jobs.checkFree("batch", concrete)
        out = Path(outFolder)
        parameters = self.getParameterNode()
        args = blcamCommand("detect", modelPath, *inputs, "--out", out, "--device", concrete, "--heatmap",
                            heatmapScale or parameters.heatmapScale, *noDataArgs(parameters.noDataValue),
                            "--progress-json", *extraArgs)

        def complete(job):
            table = loadBatchTable(slicer.mrmlScene, out)
            self.getParameterNode().batchTable = table
            return table

        return self._start("batch", args, concrete, onEvent, onLog, onFinished, complete=complete)

    def openBatchResult(self, table, row: int, opacity: float | None = None,
                        threshold: float | None = None) -> DetectionResult:
        """Open row ``row`` of a batch table: its volume, heatmap and candidates, ready for review."""
        volume, folder, name = openBatchRow(table, row)
        p = self.getParameterNode()
        result = loadResults(volume, folder, geometryOf(volume), p.heatmapOpacity if opacity is None else opacity,
                             p.heatmapThreshold if threshold is None else threshold, name=name)
        p.inputVolume = volume
        p.heatmapVolume, p.candidates, p.candidateTable = result.heatmap, result.candidates, result.table
        self.lastDetection = result
        return result

    def calibrateOnBatch(self, modelPath=None, cohortCsv=None, detectionsFolder=None, outModel=None,
                         onEvent=None, onLog=None, onFinished=None) -> Job:
        """Fit the model's score calibration on a batch Detect of an annotated cohort CSV
        (``blcam calibrate``; defaults: the panel's model, batch input and batch output).

        A model trained elsewhere (say on a GPU server) or on another scanner says little with its
        raw scores on this site's volumes; a batch of this site's annotated patients that the
        model never trained on makes them probabilities here. The calibrated copy goes to
        ``outModel`` (default: ``<batch output>/<model>-calibrated.safetensors``; the model file
        itself is never rewritten: it may be shared, or the extension's own) and becomes the
        current model. ``job.result``: :class:`.CalibrationResult`."""
        p = self.getParameterNode()
        model = str(modelPath or p.modelPath or "")
        cohort = Path(str(cohortCsv or p.batchInput or "").strip())
        detections = Path(str(detectionsFolder or p.batchOutput or "").strip())
        if not model or not Path(model).is_file():
            raise BlcamError(f"model file '{model}' not found; choose the model the batch was detected with")
        if cohort.suffix.lower() != ".csv" or not cohort.is_file():
            raise BlcamError(f"{cohort}: calibration needs a cohort CSV with the lesion annotations of the batch's "
                             "volumes as the batch input (a folder of volumes says nothing about where lesions are)")
        if not (detections / SUMMARY_FILE).is_file():
            raise BlcamError(f"{detections / SUMMARY_FILE}: missing; run Detect all on the cohort first")
        out = Path(outModel) if outModel else detections / f"{Path(model).stem}-calibrated.safetensors"
        self.jobs.checkFree("calibrate", NO_DEVICE)
        args = blcamCommand("calibrate", model, detections, cohort, "--out", out, "--progress-json")

        def complete(job) -> CalibrationResult:
            done = next((e for e in reversed(job.process.events) if e.get("event") == "done"), {})
            if not done.get("calibration"):
                raise BlcamError("blcam calibrate ended without its fit")
            self.getParameterNode().modelPath = str(done["model"])
            return CalibrationResult(Path(done["model"]), done["calibration"])

        return self._start("calibrate", args, NO_DEVICE, onEvent, onLog, onFinished, complete=complete)

    # -- review ----------------------------------------------------------------------
    def reviewCandidate(self, index: int, verdict: str | None) -> int | None:
        """Record the reader's verdict on candidate ``index`` of the current result (see
        :mod:`.Review`); returns the next candidate without a verdict, for the panel to show."""
        p = self.getParameterNode()
        if p.candidates is None:
            raise BlcamError("run Detect first: there are no candidates to review")
        setVerdict(p.candidates, index, verdict, p.candidateTable)
        return nextUnreviewed(p.candidates, index)

    def addReviewedCase(self, datasetFolder, patientId: str) -> CaseRecord:
        """"Add case" after review: the current volume with its accepted candidates as lesion
        centres (added to the case's centres node) and its rejected ones as reviewed negatives."""
        p = self.getParameterNode()
        if p.inputVolume is None:
            raise BlcamError("select the reviewed volume")
        return addReviewedCase(p.inputVolume, p.candidates, datasetFolder, patientId, p.centres)

    def describeDetect(self, volumeNode, modelPath) -> str:
        """One line for the panel before Detect starts: the model's spacing, the grid this
        volume is mapped on, and the expected time (:mod:`blcam.detect.plan`)."""
        plan = self._plan(volumeNode, modelPath)
        if isinstance(plan, str):
            return plan
        rate = self.getParameterNode().detectSecondsPerMvox
        return plan.describe(rate or None)

    def _plan(self, volumeNode, modelPath):
        if volumeNode is None or not modelPath or not Path(modelPath).is_file():
            return ""
        try:
            from blcam.detect.plan import plan_detect
            from blcam.model import read_metadata
        except ImportError:            # torch not installed yet: Detect offers to install it
            return "Detect needs PyTorch; it offers to install it."
        try:
            return plan_detect(read_metadata(modelPath), geometryOf(volumeNode))
        except BlcamError as exc:
            return str(exc)

    def _recordSpeed(self, volumeNode, modelPath, outFolder) -> None:
        """Keep the speed a finished Detect achieved, for the next estimate."""
        import csv
        plan = self._plan(volumeNode, modelPath)
        summary = Path(outFolder) / SUMMARY_FILE
        if isinstance(plan, str) or not summary.is_file():
            return
        try:                           # a speed estimate must never break loading the results
            with summary.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            seconds = float(rows[0].get("map_seconds") or 0) if rows else 0.0
        except (OSError, ValueError, csv.Error):
            return
        if seconds > 0:
            self.getParameterNode().detectSecondsPerMvox = plan.measured_rate(seconds)

    def loadDetection(self, volumeNode, outFolder, opacity: float = 0.3, threshold: float = 0.2) -> DetectionResult:
        """Show the results of an earlier ``blcam detect`` run on this volume (e.g. from the CLI)."""
        self.lastDetection = loadResults(volumeNode, outFolder, geometryOf(volumeNode), opacity, threshold)
        return self.lastDetection

    # -- display ---------------------------------------------------------------------
    def setHeatmapOpacity(self, opacity: float) -> None:
        setForegroundOpacity(slicer.mrmlScene, opacity)

    def setHeatmapThreshold(self, heatmapNode, threshold: float) -> None:
        if heatmapNode is not None:
            setHeatmapDisplay(heatmapNode, threshold)

    def jumpToCandidate(self, candidatesNode, index: int) -> list[float]:
        return jumpToCandidate(candidatesNode, index)

    def segmentCandidate(self, index: int, rule=None, volumeNode=None) -> CandidateSegment:
        """Candidate ``index`` of the current Detect result as a measured segment (see :mod:`.Segmentation`)."""
        p = self.getParameterNode()
        return segmentCandidate(p.heatmapVolume, p.candidates, index, volumeNode, rule)
