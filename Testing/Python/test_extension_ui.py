"""The module's Qt Designer file: it loads, and it has every widget the code and state need.

Loaded with PySide6's QUiLoader on the offscreen platform: Slicer's own widgets (ctk*, qMRML*,
qSlicer*) are unknown there, and Qt falls back to the base class each <customwidget> entry
declares, exactly as Designer does without Slicer's plugins. What Slicer-specific class a
widget has is read from the XML instead.
"""

from __future__ import annotations

import os
import re
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed")
from PySide6.QtCore import QFile, QIODevice, qInstallMessageHandler  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "BreastLesionCAM" / "Resources" / "UI" / "BreastLesionCAM.ui"
WIDGET_CODE = ROOT / "BreastLesionCAM" / "BreastLesionCAMLib" / "Widget.py"


@pytest.fixture(scope="module")
def loaded():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    messages = []
    previous = qInstallMessageHandler(lambda mode, context, text: messages.append(text))
    try:
        handle = QFile(str(UI))
        assert handle.open(QIODevice.ReadOnly)
        loader = QUiLoader()
        root = loader.load(handle)
        handle.close()
    finally:
        qInstallMessageHandler(previous)
    assert root is not None, loader.errorString()
    yield app, root, messages


def ui_classes() -> dict[str, str]:
    """objectName -> class as written in the .ui (Slicer's classes, not the fallbacks)."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI).iter("widget")}


def test_ui_loads_with_fallback_base_classes(loaded):
    _, root, messages = loaded
    assert root.objectName() == "BreastLesionCAM"
    fallbacks = {m for m in messages if "defaulting to base class" in m}
    assert any("qMRMLNodeComboBox" in m for m in fallbacks)  # really loaded without Slicer
    children = {w.objectName() for w in root.findChildren(QtWidgets.QWidget)}
    assert set(ui_classes()) - {"BreastLesionCAM"} <= children


def test_every_widget_the_code_uses_exists(loaded):
    _, root, _ = loaded
    used = set(re.findall(r"\bui\.(\w+)", WIDGET_CODE.read_text(encoding="utf-8")))
    assert len(used) >= 15  # the regex really finds the lookups
    missing = sorted(n for n in used if root.findChild(QtWidgets.QWidget, n) is None)
    assert not missing, f"Widget.py uses widgets the .ui lacks: {missing}"
    classes = ui_classes()
    for name in used:  # the methods the code calls exist on the real class
        if name.endswith("Button") and not name.endswith("CollapsibleButton"):
            assert classes[name] == "QPushButton", name
        if name.endswith("ProgressBar"):
            assert classes[name] == "QProgressBar", name
    assert classes["candidatesTableView"] == "qMRMLTableView"
    assert classes["centresMarkupsWidget"] == "qSlicerSimpleMarkupsWidget"
    assert classes["datasetFolderPathLineEdit"] == classes["modelPathLineEdit"] == "ctkPathLineEdit"


def test_sections_are_collapsible_and_in_order():
    tree = ET.parse(UI)
    sections = [(w.get("name"), w.find("property[@name='text']/string").text)
                for w in tree.iter("widget") if w.get("class") == "ctkCollapsibleButton"]
    assert [title for _, title in sections] == ["Case", "Lesion centres", "Dataset", "Training", "Detect",
                                                "Batch Detect", "Log"]


def test_parameter_bindings_match_the_parameter_node(loaded):
    from BreastLesionCAMLib import Parameters
    _, root, _ = loaded
    hints = typing.get_type_hints(Parameters.BreastLesionCAMParameterNode, include_extras=True)
    classes = ui_classes()
    bound = {}
    for widget in root.findChildren(QtWidgets.QWidget):
        name = widget.property("SlicerParameterName")
        if name:
            assert name not in bound, f"{name} bound twice"
            bound[name] = widget
    unknown = sorted(set(bound) - set(hints))
    assert not unknown, f"SlicerParameterName without a parameter: {unknown}"
    # Every user-editable parameter has a widget; paths and the device menu (this computer's
    # GPUs by name) are synced by hand, results (and the Detect speed the logic measures) are outputs.
    manual = {"datasetFolder", "modelPath", "runFolder", "heatmapVolume", "candidates", "candidateTable",
              "detectSecondsPerMvox", "device", "batchInput", "batchOutput", "batchTable"}
    assert set(hints) - manual == set(bound)
    for name, widget in bound.items():
        base = typing.get_args(hints[name])[0] if typing.get_origin(hints[name]) is typing.Annotated else hints[name]
        cls = classes[widget.objectName()]
        expected = {str: {"QLineEdit", "QComboBox"}, int: {"QSpinBox"}, float: {"QDoubleSpinBox", "ctkSliderWidget"},
                    bool: {"QCheckBox"}}
        assert cls in expected.get(base, {"qMRMLNodeComboBox"}), f"{name}: {cls} cannot show {base}"
        if cls == "QComboBox":
            choices = next(a.choices for a in typing.get_args(hints[name])[1:] if hasattr(a, "choices"))
            assert tuple(widget.itemText(i) for i in range(widget.count())) == tuple(choices)
        if cls == "qMRMLNodeComboBox":
            assert widget.property("nodeTypes") == [base.__name__]


def test_mrml_widgets_receive_the_scene():
    tree = ET.parse(UI)
    receivers = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {w.get("name") for w in tree.iter("widget") if w.get("class", "").startswith(("qMRML", "qSlicer"))}
    assert mrml - {"BreastLesionCAM"} == receivers


def test_spin_boxes_cannot_reach_a_value_their_parameter_refuses(loaded):
    """Slicer's binding sets a bound spin box's range from the parameter's ``WithinRange``, but
    the spin box rounds it to its decimals: a minimum it cannot show becomes a value the
    validator refuses (the learning rate's 1e-7 became 0 on a 6-decimal spin box)."""
    from BreastLesionCAMLib import Parameters
    _, root, _ = loaded
    hints = typing.get_type_hints(Parameters.BreastLesionCAMParameterNode, include_extras=True)
    checked = []
    for widget in root.findChildren(QtWidgets.QDoubleSpinBox):
        name = widget.property("SlicerParameterName")
        ranges = [a for a in typing.get_args(hints.get(name))[1:] if hasattr(a, "minimum")] if name else []
        if not ranges:
            continue
        assert (widget.minimum(), widget.maximum()) == (ranges[0].minimum, ranges[0].maximum), name
        widget.setRange(ranges[0].minimum, ranges[0].maximum)  # what Slicer's connector does
        for value in (widget.minimum(), widget.maximum()):
            widget.setValue(value)
            ranges[0].validate(widget.value())
        checked.append(name)
    assert "learningRate" in checked
