"""The Qt side of the panel: wires the .ui widgets to the parameter node and the Logic.

Everything slow runs in a background process (see :mod:`.ProcessRunner`); a ``qt.QTimer``
polls the running jobs every 200 ms, so the GUI never blocks. A job's button becomes its
Cancel button while it runs (like SlicerMONAIAuto3DSeg's Apply/Cancel), its progress bar
follows the CLI's JSON progress events, and every output line goes to the Log section.

The state lives in the scene's parameter node (``connectGui`` binds the widgets that carry a
``SlicerParameterName`` property); folder and file pickers are synced by hand because the
wrapper binds ``ctkPathLineEdit`` only to ``pathlib.Path`` parameters, and an empty path
must stay distinguishable from ".".
"""

from __future__ import annotations

import logging
from pathlib import Path

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from blcam.errors import BlcamError

from . import Dependencies
from .Dataset import summarizeCohort
from .ProcessRunner import progressFraction

POLL_MS = 200


class BreastLesionCAMPanel(VTKObservationMixin):
    """Owns the loaded .ui widget, the module logic and the running jobs."""

    def __init__(self, uiWidget, logic, isEntered=lambda: True):
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.isEntered = isEntered
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._parameterNode = None
        self._guiTag = None
        self.jobs = {"export": None, "train": None, "detect": None}
        self._describedPlan = None      # (volume, model, speed) that detectPlanLabel describes
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.pollJobs)
        for bar in (self.ui.exportProgressBar, self.ui.trainProgressBar, self.ui.detectProgressBar):
            bar.setVisible(False)
        self.ui.candidatesTableView.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self._connect()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _connect(self) -> None:
        ui = self.ui
        ui.centresSelector.connect("currentNodeChanged(vtkMRMLNode*)", ui.centresMarkupsWidget.setCurrentNode)
        ui.datasetFolderPathLineEdit.connect("currentPathChanged(QString)", self.onDatasetFolderChanged)
        ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        ui.exportButton.connect("clicked(bool)", self.onExport)
        ui.trainButton.connect("clicked(bool)", self.onTrain)
        ui.detectButton.connect("clicked(bool)", self.onDetect)
        ui.opacitySliderWidget.connect("valueChanged(double)", self.logic.setHeatmapOpacity)
        ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        ui.candidatesTableView.connect("clicked(QModelIndex)", self.onCandidateClicked)
        ui.segmentCandidateButton.connect("clicked(bool)", self.onSegmentCandidate)

    # -- parameter node ----------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if p.inputVolume is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None and first.GetAttribute("BreastLesionCAM.Result") is None:
                p.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self.updateGUI()

    def updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        ui = self.ui
        for edit, value in ((ui.datasetFolderPathLineEdit, p.datasetFolder), (ui.modelPathLineEdit, p.modelPath)):
            if edit.currentPath != value:
                wasBlocked = edit.blockSignals(True)
                edit.currentPath = value
                edit.blockSignals(wasBlocked)
        ui.centresMarkupsWidget.setCurrentNode(p.centres)
        ui.datasetStatusLabel.text = summarizeCohort(p.datasetFolder)
        if ui.candidatesTableView.mrmlTableNode() is not p.candidateTable:
            ui.candidatesTableView.setMRMLTableNode(p.candidateTable)
        idle = {kind: self.jobs[kind] is None for kind in self.jobs}
        ui.addCaseButton.enabled = bool(p.inputVolume and p.datasetFolder and p.patientId)
        ui.exportButton.enabled = bool(p.datasetFolder) or not idle["export"]
        ui.trainButton.enabled = bool(p.datasetFolder) or not idle["train"]
        ui.detectButton.enabled = bool(p.inputVolume and p.modelPath) or not idle["detect"]
        ui.segmentCandidateButton.enabled = bool(p.heatmapVolume and p.candidates)
        plan = (p.inputVolume.GetID() if p.inputVolume else None, p.modelPath, p.detectSecondsPerMvox)
        if plan != self._describedPlan:       # reading the model's header once per change
            self._describedPlan = plan
            ui.detectPlanLabel.text = self.logic.describeDetect(p.inputVolume, p.modelPath)
        ui.exportButton.text = "Export patches" if idle["export"] else "Cancel export"
        ui.trainButton.text = "Start training" if idle["train"] else "Cancel training"
        ui.detectButton.text = "Detect" if idle["detect"] else "Cancel Detect"

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.isEntered():
            self.initializeParameterNode()

    def onDatasetFolderChanged(self, path: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.datasetFolder = path

    def onModelPathChanged(self, path: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.modelPath = path

    # -- case and dataset ----------------------------------------------------------------
    def onAddCase(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not add the case.", waitCursor=True):
            record = self.logic.addCase(p.inputVolume, p.datasetFolder, p.patientId, p.volumeLabel, p.centres)
            verb = "Updated" if record.replaced else "Added"
            self.log(f"{verb} {record.patient} / {record.volume} ({record.label}, {record.centres} centre(s))")
            slicer.util.showStatusMessage(f"{verb} case {record.volume}", 3000)
        self.updateGUI()

    def onExport(self) -> None:
        if self._cancelIfRunning("export"):
            return
        if not Dependencies.ensureDependencies():
            return
        p = self._parameterNode
        self._start("export", lambda: self.logic.exportPatches(
            p.datasetFolder, onEvent=lambda e: self._onProgress(self.ui.exportProgressBar, e),
            onLog=self.log, onFinished=self._onExportFinished))

    def _onExportFinished(self, runner) -> None:
        self._finish("export", runner, "Export")
        if runner.succeeded:
            self.log(f"Patches written to {Path(self._parameterNode.datasetFolder) / 'patches'}")

    # -- training --------------------------------------------------------------------
    def onTrain(self) -> None:
        if self._cancelIfRunning("train", confirm="Stop training? The run is interrupted; "
                                 "use the command line's --resume to continue it later."):
            return
        if not Dependencies.ensureDependencies():
            return
        p = self._parameterNode
        self.ui.trainStatusLabel.text = "Starting ..."
        self.ui.curvesLabel.clear()
        self._start("train", lambda: self.logic.startTraining(
            Path(p.datasetFolder) / "patches", None, p.arch, p.epochs, p.batchSize, p.learningRate, p.device,
            onEvent=self._onTrainEvent, onLog=self.log, onFinished=self._onTrainFinished))

    def _onTrainEvent(self, event: dict) -> None:
        if event.get("event") != "epoch":  # tqdm's per-batch bars would make the bar jump
            return
        self._onProgress(self.ui.trainProgressBar, event)
        parts = [f"Epoch {event.get('epoch')}/{event.get('epochs')}"]
        for key, name in (("train_loss", "loss"), ("val_loss", "held-out loss"), ("val_acc", "held-out accuracy")):
            if isinstance(event.get(key), (int, float)):
                parts.append(f"{name} {event[key]:.3f}")
        if isinstance(event.get("eta_s"), (int, float)):
            parts.append(f"about {event['eta_s'] / 60:.0f} min left")
        self.ui.trainStatusLabel.text = " · ".join(parts)

    def _onTrainFinished(self, runner) -> None:
        self._finish("train", runner, "Training")
        if runner.succeeded:
            self.ui.trainStatusLabel.text = f"Done: model {runner.model}"
            curves = Path(runner.runFolder) / "curves.png"
            if curves.exists():
                pixmap = qt.QPixmap(str(curves))
                self.ui.curvesLabel.setPixmap(pixmap.scaledToWidth(max(200, self.ui.curvesLabel.width),
                                                                   qt.Qt.SmoothTransformation))

    # -- detect ----------------------------------------------------------------------
    def onDetect(self) -> None:
        if self._cancelIfRunning("detect"):
            return
        if not Dependencies.ensureDependencies():
            return
        p = self._parameterNode
        self._start("detect", lambda: self.logic.detect(
            p.inputVolume, p.modelPath, device=p.device,
            onEvent=lambda e: self._onProgress(self.ui.detectProgressBar, e),
            onLog=self.log, onFinished=self._onDetectFinished))

    def _onDetectFinished(self, runner) -> None:
        self._finish("detect", runner, "Detect")
        if runner.loadError:
            slicer.util.errorDisplay(f"Detect finished but its results could not be loaded: {runner.loadError}")
        elif runner.result is not None:
            count = runner.result.candidates.GetNumberOfControlPoints()
            self.ui.candidatesTableView.setMRMLTableNode(runner.result.table)
            self.log(f"Detect: {count} candidate(s); results in {runner.outFolder}")

    def onThresholdChanged(self, value: float) -> None:
        if self._parameterNode is not None:
            self.logic.setHeatmapThreshold(self._parameterNode.heatmapVolume, value)

    def onCandidateClicked(self, index) -> None:
        candidates = self._parameterNode.candidates if self._parameterNode else None
        if candidates is not None and 0 <= index.row() < candidates.GetNumberOfControlPoints():
            self.logic.jumpToCandidate(candidates, index.row())

    def onSegmentCandidate(self) -> None:
        row = self.ui.candidatesTableView.currentIndex().row()
        with slicer.util.tryWithErrorDisplay("Could not segment the candidate.", waitCursor=True):
            self.log(self.logic.segmentCandidate(max(row, 0)).describe())

    # -- jobs ------------------------------------------------------------------------
    def _start(self, kind: str, launch) -> None:
        try:
            runner = launch()
        except BlcamError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.log(f"$ {' '.join(runner.args)}")
        self.jobs[kind] = runner
        bar = {"export": self.ui.exportProgressBar, "train": self.ui.trainProgressBar,
               "detect": self.ui.detectProgressBar}[kind]
        bar.setRange(0, 0)  # busy until the first progress event
        bar.setVisible(True)
        self.timer.start()
        self.updateGUI()

    def _cancelIfRunning(self, kind: str, confirm: str | None = None) -> bool:
        runner = self.jobs[kind]
        if runner is None:
            return False
        if confirm and not slicer.util.confirmYesNoDisplay(confirm, windowTitle="BreastLesionCAM"):
            return True
        runner.cancel()
        return True

    def _finish(self, kind: str, runner, title: str) -> None:
        self.jobs[kind] = None
        bar = {"export": self.ui.exportProgressBar, "train": self.ui.trainProgressBar,
               "detect": self.ui.detectProgressBar}[kind]
        bar.setVisible(False)
        if runner.cancelled:
            self.log(f"{title} cancelled.")
        elif not runner.succeeded:
            message = runner.errorMessage()
            self.log(f"{title} failed: {message}")
            slicer.util.errorDisplay(f"{title} failed:\n{message}\n\nSee the Log section for details.")
        else:
            self.log(f"{title} finished in {runner.elapsed:.0f} s.")
        self.updateGUI()

    def pollJobs(self) -> None:
        for runner in list(self.jobs.values()):
            if runner is not None:
                runner.poll()
        if all(runner is None for runner in self.jobs.values()):
            self.timer.stop()

    def _onProgress(self, bar, event: dict) -> None:
        fraction = progressFraction(event)
        if fraction is not None:
            bar.setRange(0, 1000)
            bar.setValue(int(round(fraction * 1000)))

    def log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        logging.info(f"BreastLesionCAM: {text}")

    # -- lifetime --------------------------------------------------------------------
    def exit(self) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def cleanup(self) -> None:
        """Module closing (Slicer exits): stop jobs, nothing may outlive the application."""
        for runner in self.jobs.values():
            if runner is not None:
                runner.cancel()
        self.timer.stop()
        self.removeObservers()
