"""The module's state: one ``vtkMRMLScriptedModuleNode`` with typed access.

Everything the panel shows (input volume, patient ID, training settings, the current model,
the last Detect result) lives in the scene's parameter node, so it is saved with the scene
and comes back on load. Inside Slicer the class below is a ``slicer.parameterNodeWrapper``
(the widget binds to it through the ``SlicerParameterName`` property of each widget).

``parameterNodeWrapper`` needs Qt, which the ``slicer-core`` wheel does not ship. There the
same class is built by :func:`_plainParameterNodeWrapper`, which stores values in exactly
the wrapper's format (numbers and strings with ``SetParameter``, ``"True"``/``"False"`` for
booleans, nodes as node references named like the parameter). A scene saved by the tests or
a script therefore opens in Slicer with the same state, and the other way round.

Choices are plain tuples here rather than imports from :mod:`blcam`: the module must load
in Slicer *before* torch is installed (so it can offer to install it), and ``blcam.model``
imports torch. A test checks the tuples against :mod:`blcam`. The device is not a fixed
choice: the panel lists this computer's GPUs by name (``cuda:1``), so it is checked by
:func:`blcam.device.is_device_name`, which needs no torch.

The learning rate's range is the .ui spin box's (6 decimals: 1e-6 is the smallest step it
shows); a test holds the two together.
"""

from __future__ import annotations

import typing
from typing import Annotated

import slicer

from blcam.device import check_device_name
from blcam.errors import BlcamError

ARCHS = ("resnet10", "resnet18")
LABELS = ("healthy", "lesion")
HEATMAP_SCALES = ("auto", "probability", "relative")   # blcam detect --heatmap
LEARNING_RATE_RANGE = (1e-6, 1.0)

try:  # Slicer: the real wrapper, GUI binding included
    from slicer.parameterNodeWrapper import Choice, Validator, WithinRange, parameterNodeWrapper
    HAVE_SLICER_WRAPPER = True
except ImportError:  # slicer-core without Qt
    HAVE_SLICER_WRAPPER = False
    Validator = object

    class Choice:
        """Stand-in validator: the value must be one of ``choices``."""

        def __init__(self, choices):
            self.choices = tuple(choices)

        def validate(self, value) -> None:
            if value not in self.choices:
                raise ValueError(f"'{value}' is not one of {', '.join(map(str, self.choices))}")

    class WithinRange:
        """Stand-in validator: ``minimum <= value <= maximum``."""

        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

        def validate(self, value) -> None:
            if not self.minimum <= value <= self.maximum:
                raise ValueError(f"{value} is outside [{self.minimum}, {self.maximum}]")

    def parameterNodeWrapper(cls):
        return _plainParameterNodeWrapper(cls)


class DeviceName(Validator):
    """The value must be a device ``blcam`` accepts: auto, cpu, cuda, cuda:N or mps."""

    def validate(self, value) -> None:
        try:
            check_device_name(value, option="device")
        except BlcamError as exc:  # validators raise ValueError
            raise ValueError(str(exc)) from None


class _PlainParameter:
    """One typed value in a scripted module node, stored like Slicer's serializers do."""

    def __init__(self, name: str, type_, default, validators):
        self.name, self.type, self.default, self.validators = name, type_, default, validators
        self.isNode = isinstance(type_, type) and issubclass(type_, slicer.vtkMRMLNode)

    def isIn(self, node) -> bool:
        return node.HasParameter(self.name)

    def read(self, node):
        if self.isNode:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.type is bool:
            return text == "True"
        return self.type(text)

    def write(self, node, value) -> None:
        if self.isNode:
            if value is not None and not isinstance(value, self.type):
                raise TypeError(f"{self.name}: expected {self.type.__name__}, got {type(value).__name__}")
            wasModifying = node.StartModify()
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
            node.EndModify(wasModifying)
            return
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type):
            raise TypeError(f"{self.name}: expected {self.type.__name__}, got {type(value).__name__}")
        for validator in self.validators:
            validator.validate(value)
        node.SetParameter(self.name, ("True" if value else "False") if self.type is bool else str(value))


_DEFAULTS = {str: "", int: 0, float: 0.0, bool: False}


def _plainParameterNodeWrapper(cls):
    """Give ``cls`` typed properties backed by a scripted module node (no Qt needed)."""
    parameters = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        validators = []
        if typing.get_origin(hint) is Annotated:
            hint, *extras = typing.get_args(hint)
            validators = [e for e in extras if hasattr(e, "validate")]
        default = cls.__dict__.get(name, _DEFAULTS.get(hint))
        parameters[name] = _PlainParameter(name, hint, default, validators)
        setattr(cls, name, property(
            lambda self, p=parameters[name]: p.read(self.parameterNode),
            lambda self, value, p=parameters[name]: p.write(self.parameterNode, value)))

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        for p in parameters.values():
            if not p.isIn(parameterNode):
                p.write(parameterNode, p.default)

    cls.__init__ = __init__
    cls.allParameters = parameters
    cls.getValue = lambda self, name: getattr(self, name)
    cls.setValue = lambda self, name, value: setattr(self, name, value)
    return cls


@parameterNodeWrapper
class BreastLesionCAMParameterNode:
    """What the panel edits; names match the ``SlicerParameterName`` of the .ui widgets."""

    # Case: the volume being annotated and where it goes in the cohort
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    patientId: str = ""
    volumeLabel: Annotated[str, Choice(LABELS)] = "lesion"
    centres: slicer.vtkMRMLMarkupsFiducialNode
    # Dataset: cohort.csv, volumes/ and annotations/ live here; patches/ is the export
    datasetFolder: str = ""
    # Training (defaults are the paper's recipe, as in ``blcam train``)
    arch: Annotated[str, Choice(ARCHS)] = "resnet18"
    epochs: Annotated[int, WithinRange(1, 10000)] = 250
    batchSize: Annotated[int, WithinRange(1, 1024)] = 14
    learningRate: Annotated[float, WithinRange(*LEARNING_RATE_RANGE)] = 1e-3
    device: Annotated[str, DeviceName()] = "auto"          # the device menu is filled by the panel
    calibrateScores: bool = False                          # --fold 0 --calibrate (see Logic.startTraining)
    runFolder: str = ""
    # Detect
    modelPath: str = ""
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.3
    heatmapThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    # What the heatmap's colours mean (blcam detect --heatmap): 'auto' scales a calibrated
    # model's map by the volume's lesion probability, 'relative' is the paper's per-volume maximum
    heatmapScale: Annotated[str, Choice(HEATMAP_SCALES)] = "auto"
    # Grey value the volume's export writes where nothing was imaged (blcam detect --no-data-value);
    # empty: none (NaN voxels and constant padding planes are left out anyway)
    noDataValue: str = ""
    # Seconds per million voxel reads the last Detect achieved on this computer (0: not yet)
    detectSecondsPerMvox: Annotated[float, WithinRange(0.0, 1e6)] = 0.0
    heatmapVolume: slicer.vtkMRMLScalarVolumeNode
    candidates: slicer.vtkMRMLMarkupsFiducialNode
    candidateTable: slicer.vtkMRMLTableNode
    # Batch Detect: a folder of volumes or a cohort CSV, where its outputs go, and the score table
    batchInput: str = ""
    batchOutput: str = ""
    batchTable: slicer.vtkMRMLTableNode
