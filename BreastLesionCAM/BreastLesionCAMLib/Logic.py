"""The module's logic: what the panel does, callable from scripts, tests and the Python console.

Methods take MRML nodes and plain values, never widgets, and never import Qt: the same code
runs in Slicer and with only ``slicer-core`` (real MRML, no GUI). The heavy work runs in a
background ``python -m blcam`` process (:class:`.ProcessRunner`); the methods that start one
return the runner at once. The caller keeps calling ``runner.poll()`` (the widget from a
``qt.QTimer``, scripts through ``runner.wait()``), which delivers progress callbacks and, at
the end, loads results into the scene on the caller's thread.

Example (Slicer's Python console or a plain script with slicer-core)::

    logic = BreastLesionCAMLogic()
    logic.addCase(volume, "/data/abus", "P001", "lesion", centres)
    logic.exportPatches("/data/abus").wait()
    run = logic.startTraining("/data/abus/patches", "/data/abus/runs/r1", epochs=50)
    run.wait()
    detect = logic.detect(volume, logic.getParameterNode().modelPath)
    detect.wait()
    heatmap = logic.getParameterNode().heatmapVolume
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import slicer

from blcam.errors import BlcamError

from .Dataset import COHORT_NAME, CaseRecord, addCase, safeName
from .NodeIO import geometryOf, writeVolumeNode
from .Parameters import BreastLesionCAMParameterNode
from .ProcessRunner import ProcessRunner, blcamCommand
from .Results import DetectionResult, jumpToCandidate, loadResults, setForegroundOpacity, setHeatmapDisplay
from .Segmentation import CandidateSegment, segmentCandidate

MODULE_NAME = "BreastLesionCAM"


class BreastLesionCAMLogic:
    """Annotate → export → train → Detect, with the state in the scene's parameter node."""

    moduleName = MODULE_NAME

    def __init__(self):
        self.isSingletonParameterNode = True
        self.lastDetection: DetectionResult | None = None

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

    # -- case and dataset ------------------------------------------------------------
    def addCase(self, volumeNode, datasetFolder, patientId: str, label: str, centresNode=None) -> CaseRecord:
        """Write the volume, its lesion centres and its cohort row (see :mod:`.Dataset`)."""
        return addCase(volumeNode, datasetFolder, patientId, label, centresNode)

    def exportPatches(self, datasetFolder, outFolder=None, extraArgs=(), onEvent=None, onLog=None,
                      onFinished=None) -> ProcessRunner:
        """Run ``blcam export`` on the dataset's cohort; patches go to ``<dataset>/patches``."""
        cohort = Path(datasetFolder or "") / COHORT_NAME
        if not str(datasetFolder or "").strip() or not cohort.is_file():
            raise BlcamError(f"{cohort}: no cohort yet; add cases to the dataset first")
        out = Path(outFolder) if outFolder else Path(datasetFolder) / "patches"
        args = blcamCommand("export", cohort, "--out", out, *extraArgs)
        return ProcessRunner(args, onEvent, onLog, onFinished).start()

    # -- training --------------------------------------------------------------------
    def startTraining(self, patchesFolder, runFolder=None, arch: str = "resnet18", epochs: int = 250,
                      batchSize: int = 14, learningRate: float = 1e-3, device: str = "auto",
                      extraArgs=(), onEvent=None, onLog=None, onFinished=None) -> ProcessRunner:
        """Run ``blcam train`` with JSON progress; at the end the model becomes the current one."""
        patches = Path(patchesFolder or "")
        if not (patches / "manifest.csv").is_file():
            raise BlcamError(f"{patches}: no exported patches (manifest.csv); export patches first")
        run = Path(runFolder) if runFolder else patches.parent / "runs" / time.strftime("run-%Y%m%d-%H%M%S")
        args = blcamCommand("train", patches, "--out", run, "--arch", arch, "--epochs", int(epochs),
                            "--batch-size", int(batchSize), "--lr", repr(float(learningRate)),
                            "--device", device, "--progress-json", *extraArgs)

        def finished(runner):
            model = next((e.get("model") for e in reversed(runner.events) if e.get("event") == "done"), None)
            runner.model = model
            if runner.succeeded and model:
                parameters = self.getParameterNode()
                parameters.modelPath = str(model)
                parameters.runFolder = str(run)
            if onFinished:
                onFinished(runner)

        runner = ProcessRunner(args, onEvent, onLog, finished)
        runner.model = None
        runner.runFolder = run
        return runner.start()

    # -- detect ----------------------------------------------------------------------
    def detect(self, volumeNode, modelPath, outFolder=None, device: str = "auto", opacity: float | None = None,
               threshold: float | None = None, extraArgs=(), onEvent=None, onLog=None,
               onFinished=None) -> ProcessRunner:
        """Run ``blcam detect`` on ``volumeNode``; when it ends, the heatmap, candidates and
        table are in the scene (``runner.result``) and shown in the slice views."""
        if not modelPath or not Path(modelPath).is_file():
            raise BlcamError(f"model file '{modelPath}' not found; train a model or choose one")
        out = Path(outFolder) if outFolder else Path(tempfile.mkdtemp(prefix="BreastLesionCAM-detect-"))
        work = Path(tempfile.mkdtemp(prefix="BreastLesionCAM-input-"))
        inputPath = work / f"{safeName(volumeNode.GetName())}.nrrd"
        try:
            sentGeometry = writeVolumeNode(volumeNode, inputPath, compress=False)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        # blcam detect runs on CUDA or CPU; on a Mac ('mps') 'auto' picks the CPU.
        args = blcamCommand("detect", modelPath, inputPath, "--out", out,
                            "--device", "auto" if device == "mps" else device, "--progress-json", *extraArgs)
        parameters = self.getParameterNode()
        opacity = parameters.heatmapOpacity if opacity is None else opacity
        threshold = parameters.heatmapThreshold if threshold is None else threshold

        def finished(runner):
            shutil.rmtree(work, ignore_errors=True)
            runner.result = None
            if runner.succeeded:
                try:
                    runner.result = self.lastDetection = loadResults(volumeNode, out, sentGeometry, opacity, threshold)
                except BlcamError as exc:
                    runner.loadError = str(exc)
                else:
                    p = self.getParameterNode()
                    p.heatmapVolume = runner.result.heatmap
                    p.candidates = runner.result.candidates
                    p.candidateTable = runner.result.table
                    self._recordSpeed(volumeNode, modelPath, out)
            if onFinished:
                onFinished(runner)

        runner = ProcessRunner(args, onEvent, onLog, finished)
        runner.result, runner.loadError, runner.outFolder = None, None, out
        return runner.start()

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
        summary = Path(outFolder) / "detections.csv"
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
