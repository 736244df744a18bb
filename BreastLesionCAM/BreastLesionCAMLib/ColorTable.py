"""The heatmap's colour table: Slicer's own *Inferno*, or the module's copy where it is missing.

The heatmap wants a perceptually uniform hot map, the same on every install. Slicer ships
*Inferno* as a colour file (node ID ``vtkMRMLColorTableNodeFileInferno.txt``, in every
Slicer 5); the heatmap uses it there, so the user finds it in the Colors module and in the
colour menus like any of Slicer's tables. Without it (``slicer-core`` loads no colour
files, nor may a trimmed build) the module builds its own 256-entry table from 17 anchors of
matplotlib's *inferno* (linear interpolation between them stays within 0.03 of the original
in every channel) and stores it in the scene, where it is saved like any node.
"""

from __future__ import annotations

import numpy as np

SLICER_INFERNO_ID = "vtkMRMLColorTableNodeFileInferno.txt"
COLOR_TABLE_NAME = "BreastLesionCAM Inferno"
COLOR_TABLE_ATTRIBUTE = "BreastLesionCAM.ColorTable"
NUMBER_OF_COLORS = 256

# matplotlib "inferno" sampled at 0, 1/16, ..., 1 (RGB in [0, 1]).
INFERNO_ANCHORS = np.array([
    (0.0015, 0.0005, 0.0139), (0.0423, 0.0281, 0.1411), (0.1293, 0.0473, 0.2908),
    (0.2383, 0.0366, 0.3964), (0.3415, 0.0623, 0.4294), (0.4412, 0.0993, 0.4316),
    (0.5409, 0.1347, 0.4151), (0.6401, 0.1714, 0.3811), (0.7357, 0.2159, 0.3302),
    (0.8224, 0.2752, 0.2661), (0.8943, 0.3534, 0.1936), (0.9470, 0.4492, 0.1153),
    (0.9784, 0.5579, 0.0349), (0.9879, 0.6753, 0.0653), (0.9746, 0.7977, 0.2063),
    (0.9476, 0.9174, 0.4107), (0.9884, 0.9984, 0.6449),
])


def infernoColors(count: int = NUMBER_OF_COLORS) -> np.ndarray:
    """``(count, 3)`` RGB values in [0, 1], dark purple to pale yellow."""
    anchors = np.linspace(0.0, 1.0, len(INFERNO_ANCHORS))
    x = np.linspace(0.0, 1.0, count)
    return np.stack([np.interp(x, anchors, INFERNO_ANCHORS[:, c]) for c in range(3)], axis=1)


def findInfernoColorTable(scene):
    """The module's colour table in ``scene`` (e.g. loaded with a saved scene), or None."""
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLColorTableNode")
        if node.GetAttribute(COLOR_TABLE_ATTRIBUTE) == "inferno":
            return node
    return None


def heatmapColorTable(scene):
    """Slicer's Inferno table if ``scene`` has it, else the module's (added the first time)."""
    node = scene.GetNodeByID(SLICER_INFERNO_ID)
    return node if node is not None else getOrCreateInfernoColorTable(scene)


def isInfernoColorNode(node) -> bool:
    """Is ``node`` Slicer's Inferno table or the module's copy of it?"""
    if node is None:
        return False
    return node.GetID() == SLICER_INFERNO_ID or node.GetAttribute(COLOR_TABLE_ATTRIBUTE) == "inferno"


def getOrCreateInfernoColorTable(scene):
    """Return the module's inferno table, adding it to ``scene`` the first time."""
    node = findInfernoColorTable(scene)
    if node is not None:
        return node
    node = scene.CreateNodeByClass("vtkMRMLColorTableNode")
    node.UnRegister(None)  # the Python variable owns it until the scene does
    node.SetName(COLOR_TABLE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(NUMBER_OF_COLORS)
    node.GetLookupTable().SetTableRange(0.0, 1.0)
    for index, (r, g, b) in enumerate(infernoColors()):
        node.SetColor(index, f"{index / (NUMBER_OF_COLORS - 1):.3f}", float(r), float(g), float(b), 1.0)
    node.SetAttribute(COLOR_TABLE_ATTRIBUTE, "inferno")
    node.SetAttribute("Category", "BreastLesionCAM")
    scene.AddNode(node)
    return node
