"""The Qt side of the panel: wires the .ui widgets to the parameter node and the Logic.

Everything slow runs in a background job (:mod:`.Jobs`); a ``qt.QTimer`` polls the Logic's
jobs every 200 ms, so the GUI never blocks, and shows what :class:`.JobBoard` says of each:
a job's button becomes its Cancel button while it runs (like SlicerMONAIAuto3DSeg's
Apply/Cancel), its progress bar follows the CLI's progress, every output line goes to the
Log section. The job state machine itself has no Qt and is tested with real processes;
this file only displays it.

The state lives in the scene's parameter node (``connectGui`` binds the widgets that carry a
``SlicerParameterName`` property); folder and file pickers are synced by hand because the
wrapper binds ``ctkPathLineEdit`` only to ``pathlib.Path`` parameters, and an empty path
must stay distinguishable from "."; so is the device menu, whose entries (each GPU by name)
depend on the computer.
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
from .Jobs import JobState

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
        self._describedPlan = None      # (volume, model, speed) that detectPlanLabel describes
        self.buttons = {"export": self.ui.exportButton, "train": self.ui.trainButton, "detect": self.ui.detectButton,
                        "batch": self.ui.batchDetectButton, "calibrate": self.ui.calibrateBatchButton}
        self.bars = {"export": self.ui.exportProgressBar, "train": self.ui.trainProgressBar,
                     "detect": self.ui.detectProgressBar, "batch": self.ui.batchProgressBar,
                     "calibrate": self.ui.calibrateProgressBar}
        self.paths = {"datasetFolder": self.ui.datasetFolderPathLineEdit, "modelPath": self.ui.modelPathLineEdit,
                      "batchInput": self.ui.batchInputPathLineEdit, "batchOutput": self.ui.batchOutputPathLineEdit}
        # Review keys: active while the panel (e.g. the candidates table) has the focus.
        self.shortcuts = []
        for key, verdict in (("L", "lesion"), ("N", "not lesion")):
            shortcut = qt.QShortcut(qt.QKeySequence(key), uiWidget)
            shortcut.setContext(qt.Qt.WidgetWithChildrenShortcut)
            shortcut.connect("activated()", lambda v=verdict: self.onReview(v))
            self.shortcuts.append(shortcut)
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.pollJobs)
        for name, label in self.logic.deviceChoices():
            self.ui.deviceComboBox.addItem(label, name)
        self.ui.candidatesTableView.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self._connect()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _connect(self) -> None:
        ui = self.ui
        ui.centresSelector.connect("currentNodeChanged(vtkMRMLNode*)", ui.centresMarkupsWidget.setCurrentNode)
        for name, edit in self.paths.items():
            edit.connect("currentPathChanged(QString)", lambda path, n=name: self.onPathChanged(n, path))
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        ui.addCaseButton.connect("clicked(bool)", self.onAddCase)
        ui.exportButton.connect("clicked(bool)", self.onExport)
        ui.trainButton.connect("clicked(bool)", self.onTrain)
        ui.detectButton.connect("clicked(bool)", self.onDetect)
        ui.opacitySliderWidget.connect("valueChanged(double)", self.logic.setHeatmapOpacity)
        ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        ui.candidatesTableView.connect("clicked(QModelIndex)", self.onCandidateClicked)
        ui.segmentCandidateButton.connect("clicked(bool)", self.onSegmentCandidate)
        ui.reviewLesionButton.connect("clicked(bool)", lambda: self.onReview("lesion"))
        ui.reviewRejectButton.connect("clicked(bool)", lambda: self.onReview("not lesion"))
        ui.addReviewedCaseButton.connect("clicked(bool)", self.onAddReviewedCase)
        ui.batchDetectButton.connect("clicked(bool)", self.onBatchDetect)
        ui.batchTableView.connect("clicked(QModelIndex)", self.onBatchRowClicked)
        ui.calibrateBatchButton.connect("clicked(bool)", self.onCalibrateBatch)

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
        for name, edit in self.paths.items():
            value = getattr(p, name)
            if edit.currentPath != value:
                wasBlocked = edit.blockSignals(True)
                edit.currentPath = value
                edit.blockSignals(wasBlocked)
        device = ui.deviceComboBox.findData(p.device)
        if device < 0:  # e.g. a scene saved on a computer with more GPUs
            ui.deviceComboBox.addItem(f"{p.device} (not on this computer)", p.device)
            device = ui.deviceComboBox.count - 1
        wasBlocked = ui.deviceComboBox.blockSignals(True)
        ui.deviceComboBox.currentIndex = device
        ui.deviceComboBox.blockSignals(wasBlocked)
        ui.centresMarkupsWidget.setCurrentNode(p.centres)
        ui.datasetStatusLabel.text = summarizeCohort(p.datasetFolder)
        for view, table in ((ui.candidatesTableView, p.candidateTable), (ui.batchTableView, p.batchTable)):
            if view.mrmlTableNode() is not table:
                view.setMRMLTableNode(table)
        ui.addCaseButton.enabled = bool(p.inputVolume and p.datasetFolder and p.patientId)
        ui.segmentCandidateButton.enabled = bool(p.heatmapVolume and p.candidates)
        for button in (ui.reviewLesionButton, ui.reviewRejectButton):
            button.enabled = bool(p.candidates and p.candidates.GetNumberOfControlPoints())
        ui.addReviewedCaseButton.enabled = bool(p.candidates and p.datasetFolder and p.patientId)
        plan = (p.inputVolume.GetID() if p.inputVolume else None, p.modelPath, p.detectSecondsPerMvox)
        if plan != self._describedPlan:       # reading the model's header once per change
            self._describedPlan = plan
            ui.detectPlanLabel.text = self.logic.describeDetect(p.inputVolume, p.modelPath)
        self.showJobs()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.isEntered():
            self.initializeParameterNode()

    def onPathChanged(self, name: str, path: str) -> None:
        if self._parameterNode is not None:
            setattr(self._parameterNode, name, path)

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    # -- case and dataset ----------------------------------------------------------------
    def onAddCase(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not add the case.", waitCursor=True):
            record = self.logic.addCase(p.inputVolume, p.datasetFolder, p.patientId, p.volumeLabel, p.centres)
            verb = "Updated" if record.replaced else "Added"
            self.log(f"{verb} {record.patient} / {record.volume} ({record.label}, {record.centres} centre(s))")
            slicer.util.showStatusMessage(f"{verb} case {record.volume}", 3000)
        self.updateGUI()

    # -- jobs: each button starts its job, or cancels it while it runs ------------------
    def onExport(self) -> None:
        p = self._parameterNode
        self._startOrCancel("export", lambda: self.logic.exportPatches(
            p.datasetFolder, onLog=self.log, onFinished=self._onJobEnded))

    def onTrain(self) -> None:
        p = self._parameterNode
        self.ui.curvesLabel.clear()
        self._startOrCancel("train", lambda: self.logic.startTraining(
            Path(p.datasetFolder) / "patches", None, p.arch, p.epochs, p.batchSize, p.learningRate, p.device,
            calibrate=p.calibrateScores, onLog=self.log, onFinished=self._onJobEnded),
            confirm="Stop training? The run is interrupted; use the command line's --resume to continue it later.")

    def onDetect(self) -> None:
        p = self._parameterNode
        self._startOrCancel("detect", lambda: self.logic.detect(
            p.inputVolume, p.modelPath, device=p.device, onLog=self.log, onFinished=self._onJobEnded))

    def onBatchDetect(self) -> None:
        p = self._parameterNode
        self._startOrCancel("batch", lambda: self.logic.batchDetect(
            p.batchInput, p.modelPath, p.batchOutput, device=p.device, onLog=self.log, onFinished=self._onJobEnded))

    def onCalibrateBatch(self) -> None:
        self._startOrCancel("calibrate", lambda: self.logic.calibrateOnBatch(
            onLog=self.log, onFinished=self._onJobEnded))

    def onBatchRowClicked(self, index) -> None:
        p = self._parameterNode
        if p is not None and p.batchTable is not None and index.row() >= 0:
            with slicer.util.tryWithErrorDisplay("Could not open the volume.", waitCursor=True):
                result = self.logic.openBatchResult(p.batchTable, index.row())
                slicer.util.setSliceViewerLayers(background=p.inputVolume, fit=True)
                self.log(f"Opened {p.inputVolume.GetName()}: {result.summary()}")

    # -- review: a verdict per candidate, then the case goes into the dataset ------------
    def onReview(self, verdict: str) -> None:
        p = self._parameterNode
        if p is None or p.candidates is None or not p.candidates.GetNumberOfControlPoints():
            return
        row = max(self.ui.candidatesTableView.currentIndex().row(), 0)
        with slicer.util.tryWithErrorDisplay("Could not record the verdict."):
            following = self.logic.reviewCandidate(row, verdict)
            if following is not None:
                self.ui.candidatesTableView.selectRow(following)
                self.logic.jumpToCandidate(p.candidates, following)

    def onAddReviewedCase(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not add the reviewed case.", waitCursor=True):
            record = self.logic.addReviewedCase(p.datasetFolder, p.patientId)
            self.log(f"Added reviewed {record.patient} / {record.volume} ({record.label}, "
                     f"{record.centres} centre(s), reviewed negatives in the cohort's 'negatives' column)")
        self.updateGUI()

    def _startOrCancel(self, kind: str, launch, confirm: str | None = None) -> None:
        job = self.logic.jobs.job(kind)
        if job is not None and job.running:
            if confirm is None or slicer.util.confirmYesNoDisplay(confirm, windowTitle="BreastLesionCAM"):
                job.cancel()  # returns at once; the timer sees the job end
        elif Dependencies.ensureDependencies():
            try:
                job = launch()
            except BlcamError as exc:
                slicer.util.errorDisplay(str(exc))
                return
            self.log(f"$ {' '.join(job.args)}")
            self.timer.start()
        self.showJobs()

    def _onJobEnded(self, job) -> None:
        self.log(job.message)
        if job.state is JobState.FAILED:  # after this poll, not inside it: the dialog is modal
            message = f"{job.message}\n\nSee the Log section for details."
            qt.QTimer.singleShot(0, lambda: slicer.util.errorDisplay(message))
        if job.kind == "train" and job.succeeded and job.result.curves is not None:
            pixmap = qt.QPixmap(str(job.result.curves))
            self.ui.curvesLabel.setPixmap(pixmap.scaledToWidth(max(200, self.ui.curvesLabel.width),
                                                               qt.Qt.SmoothTransformation))

    def pollJobs(self) -> None:
        if not self.logic.jobs.poll():
            self.timer.stop()
        self.showJobs()

    def showJobs(self) -> None:
        """Buttons and progress bars as :meth:`.JobBoard.view` describes them."""
        p = self._parameterNode
        ready = {"export": bool(p and p.datasetFolder), "train": bool(p and p.datasetFolder),
                 "detect": bool(p and p.inputVolume and p.modelPath),
                 "batch": bool(p and p.batchInput and p.batchOutput and p.modelPath),
                 "calibrate": bool(p and p.batchTable and p.modelPath and p.batchInput.lower().endswith(".csv"))}
        for kind, button in self.buttons.items():
            view = self.logic.jobs.view(kind)
            button.text = view.buttonText
            button.enabled = view.buttonEnabled and (view.running or ready[kind])
            self.bars[kind].setVisible(view.progressVisible)
            self.bars[kind].setRange(0, 0 if view.progress is None else 1000)  # 0-0: busy
            self.bars[kind].setValue(int(round((view.progress or 0.0) * 1000)))
        self.ui.trainStatusLabel.text = self.logic.jobs.view("train").status

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

    def log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        logging.info(f"BreastLesionCAM: {text}")

    # -- lifetime --------------------------------------------------------------------
    def exit(self) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def cleanup(self) -> None:
        """Module closing (Slicer exits): stop jobs, nothing may outlive the application."""
        self.logic.jobs.stopAll()
        self.timer.stop()
        self.removeObservers()
