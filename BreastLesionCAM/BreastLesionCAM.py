"""BreastLesionCAM: find lesions in 3D breast ultrasound from one centre point per lesion.

The Slicer module file stays thin: module description, the widget glue that loads the .ui
and hands it to :class:`BreastLesionCAMLib.Widget.BreastLesionCAMPanel`, and the self-test.
The logic (:mod:`BreastLesionCAMLib.Logic`) runs without Qt, the heavy work in background
``python -m blcam`` processes; ``blcam`` is the core package next to this file.
"""

import logging
import os
import tempfile
import unittest

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from BreastLesionCAMLib.Logic import BreastLesionCAMLogic  # noqa: F401  (Slicer looks it up here)
from BreastLesionCAMLib.SamplePhantom import registerSampleData


class BreastLesionCAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Breast Lesion CAM"
        self.parent.categories = ["Ultrasound"]
        self.parent.dependencies = []
        self.parent.contributors = ["BreastLesionCAM developers"]
        self.parent.helpText = """
Weakly supervised lesion detection in 3D breast ultrasound. Annotate one centre point per lesion,
collect the cases into a dataset, export patches, train a 3D ResNet and run Detect: a Grad-CAM
heatmap over the volume and scored lesion candidates. Heavy work runs in the background and can be
cancelled. See <a href="https://github.com/breastlesioncam/SlicerBreastLesionCAM#slicer-extension">the
documentation</a>.
"""
        self.parent.acknowledgementText = """
Method: "Lesion detection in 3D breast ultrasound with one centre point per lesion" (3D ResNet
trained on lesion-centred and healthy patches, Grad-CAM localisation). Built on MONAI and PyTorch.
"""
        # Sample Data: a phantom with lesions and a healthy one, generated on first use.
        slicer.app.connect("startupCompleted()", registerSampleData)


class BreastLesionCAMWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        # slicer.util.getModuleLogic("BreastLesionCAM") returns this attribute; set before the
        # base class, which may call setup() itself.
        self.logic = BreastLesionCAMLogic()
        self.panel = None
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from BreastLesionCAMLib.Widget import BreastLesionCAMPanel
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BreastLesionCAM.ui"))
        self.layout.addWidget(uiWidget)
        self.panel = BreastLesionCAMPanel(uiWidget, self.logic, lambda: self.parent.isEntered)

    def enter(self):
        self.panel.initializeParameterNode()

    def exit(self):
        self.panel.exit()

    def cleanup(self):
        self.panel.cleanup()


class BreastLesionCAMTest(ScriptedLoadableModuleTest):
    """The end-to-end scenario of ``Testing/Python/test_slicer_pipeline.py``, inside Slicer:
    phantom cases → Add case → Export → Train (tiny) → Detect → checks on the results."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        try:
            self.test_BreastLesionCAM_pipeline()
        except unittest.SkipTest as skip:  # "Reload and Test" calls this directly, not unittest
            self.delayDisplay(f"Skipped: {skip}")

    def test_BreastLesionCAM_pipeline(self):
        from BreastLesionCAMLib import Dependencies, Scenario
        from BreastLesionCAMLib.Jobs import JobState

        # Under --testing nothing is installed (Slicer's pip_ensure skips installs there, and
        # PyTorch-based extensions do not download torch on test machines): without the
        # packages the test is skipped, saying which are missing. Otherwise they are
        # installed after asking, as the panel does.
        skip = Dependencies.selfTestSkipReason()
        if skip:
            logging.warning(skip)
            self.skipTest(skip)
        self.assertTrue(Dependencies.ensureDependencies(), "PyTorch and the packages blcam needs are missing")
        self.delayDisplay("Building phantom cases")
        work = tempfile.mkdtemp(prefix="BreastLesionCAMTest-")
        logic = BreastLesionCAMLogic()
        cases = Scenario.addCohort(slicer.mrmlScene)
        for case in cases:
            if not case.heldOut:
                logic.addCase(case.volume, os.path.join(work, "dataset"), case.patient, case.label, case.centres)
        self.delayDisplay("Exporting patches")
        export = logic.exportPatches(os.path.join(work, "dataset"), extraArgs=Scenario.EXPORT_ARGS)
        self.assertEqual(export.wait(Scenario.TIMEOUT_S), JobState.SUCCEEDED, export.message)
        self.delayDisplay("Training a tiny model")
        train = logic.startTraining(os.path.join(work, "dataset", "patches"), os.path.join(work, "run"),
                                    **Scenario.TRAIN_SETTINGS)
        self.assertEqual(train.wait(Scenario.TIMEOUT_S), JobState.SUCCEEDED, train.message)
        model = logic.getParameterNode().modelPath
        self.assertTrue(os.path.isfile(model))
        self.delayDisplay("Detect")
        test = next(c for c in cases if c.heldOut)
        detect = logic.detect(test.volume, model, extraArgs=Scenario.DETECT_ARGS)
        self.assertEqual(detect.wait(Scenario.TIMEOUT_S), JobState.SUCCEEDED, detect.message)
        result = detect.result
        problems = Scenario.checkDetection(test, result)
        self.assertEqual(problems, [])
        self.delayDisplay("Test passed")
