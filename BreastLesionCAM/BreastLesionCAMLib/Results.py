"""Detect's files into MRML nodes, shown the way a radiologist reads them.

* heatmap: a scalar volume with *exactly* the input's IJK-to-RAS matrix and parent transform
  (the file is checked against the geometry that was sent, then its voxels are put on the
  input's own grid), the Inferno colour table (:mod:`.ColorTable`), window 0–1 and a lower
  threshold so cold areas stay transparent; shown as the 30 % foreground of every slice view;
* candidates: a fiducial node read by Slicer's markups storage (LPS → RAS handled there),
  placed under the input's parent transform with unchanged world positions;
* a table node (label, score, R, A, S and the CLI's size estimate i × j × k) that the panel
  shows; selecting a row jumps all slice views to that candidate.

File names and columns come from Detect's output contract (:mod:`blcam.detect.outputs`,
importable without torch); values are read from its CSV columns, never parsed out of text.

Nodes made for an input are tagged with its ID and reused by the next Detect on it, so
re-running does not pile up copies.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray

from blcam.detect.outputs import CANDIDATE_COLUMNS, VolumeOutputs
from blcam.errors import BlcamError
from blcam.io.volume import Geometry, read_volume

from .ColorTable import heatmapColorTable
from .NodeIO import arrayToMatrix, controlPointsWorldRAS, ijkToRAS, readMarkupsJson

SOURCE_ATTRIBUTE = "BreastLesionCAM.DetectInput"   # value: the input volume's node ID
KIND_ATTRIBUTE = "BreastLesionCAM.Result"           # 'heatmap' | 'candidates' | 'table'
CANDIDATE_COLOR = (0.0, 1.0, 1.0)                   # cyan: readable over grey and inferno


@dataclass
class DetectionResult:
    heatmap: object          # vtkMRMLScalarVolumeNode
    candidates: object       # vtkMRMLMarkupsFiducialNode
    table: object            # vtkMRMLTableNode
    folder: Path | None      # blcam detect's output folder; None once a temporary one is removed
    volumeScore: float | None = None   # from the candidates JSON; None for outputs without one
    calibrated: bool = False           # the model's scores are probabilities (blcam calibrate)

    def summary(self) -> str:
        count = self.candidates.GetNumberOfControlPoints()
        text = f"{count} candidate(s)"
        if self.volumeScore is not None:
            what = ("calibrated probability of a lesion" if self.calibrated
                    else "the network's score, not calibrated")
            text += f"; volume score {self.volumeScore:.2f} ({what})"
        return text + (f", files in {self.folder}" if self.folder is not None else "")


def findOutputs(folder, name: str | None = None) -> VolumeOutputs:
    """The files ``blcam detect`` wrote for volume ``name`` into ``folder`` (``None``: the one
    volume there, as after a single-volume Detect)."""
    folder = Path(folder)
    if name is None:
        names = VolumeOutputs.names_in(folder)
        if len(names) != 1:
            raise BlcamError(f"{folder}: expected the outputs of one volume from blcam detect, found {len(names)}")
        name = names[0]
    files = VolumeOutputs(folder, name)
    for path in (files.heatmap, files.markups):
        if not path.is_file():
            raise BlcamError(f"{path}: missing from blcam detect's output")
    return files


def loadResults(volumeNode, folder, sentGeometry: Geometry, opacity: float = 0.3,
                threshold: float = 0.2, name: str | None = None) -> DetectionResult:
    """Turn one volume's Detect outputs (``name`` in ``folder``; see :func:`findOutputs`) into
    nodes next to ``volumeNode`` and show them."""
    files = findOutputs(folder, name)
    heatmap = loadHeatmap(volumeNode, files.heatmap, sentGeometry)
    candidates = loadCandidates(volumeNode, files.markups)
    table = candidateTable(volumeNode, candidates, files.csv if files.csv.is_file() else None)
    showHeatmap(volumeNode, heatmap, opacity, threshold)
    score, calibrated = _volumeScore(files.json)
    return DetectionResult(heatmap, candidates, table, Path(folder), score, calibrated)


def _volumeScore(path: Path) -> tuple[float | None, bool]:
    """The volume score and whether it is calibrated, from the candidates JSON (when readable:
    the heatmap and markups are what the display needs, this is the summary line's)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return float(doc["volume_score"]), doc.get("calibration") is not None
    except (OSError, ValueError, KeyError, TypeError):
        return None, False


def _resultNode(volumeNode, kind: str, className: str, name: str):
    scene = volumeNode.GetScene()
    for n in range(scene.GetNumberOfNodesByClass(className)):
        node = scene.GetNthNodeByClass(n, className)
        if node.GetAttribute(SOURCE_ATTRIBUTE) == volumeNode.GetID() and node.GetAttribute(KIND_ATTRIBUTE) == kind:
            return node
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
    node.SetAttribute(SOURCE_ATTRIBUTE, volumeNode.GetID())
    node.SetAttribute(KIND_ATTRIBUTE, kind)
    return node


def loadHeatmap(volumeNode, path, sentGeometry: Geometry):
    """The heatmap on the input's exact grid; refuses a file whose geometry differs."""
    array, geometry = read_volume(path)
    same = (geometry.size == sentGeometry.size
            and np.allclose(geometry.spacing, sentGeometry.spacing, rtol=1e-5, atol=1e-6)
            and np.allclose(geometry.origin, sentGeometry.origin, atol=1e-4)
            and np.allclose(geometry.direction, sentGeometry.direction, atol=1e-5))
    if not same:
        raise BlcamError(f"{path}: heatmap geometry {geometry} differs from the input's {sentGeometry}")
    node = _resultNode(volumeNode, "heatmap", "vtkMRMLScalarVolumeNode", f"{volumeNode.GetName()} heatmap")
    node.SetIJKToRASMatrix(arrayToMatrix(ijkToRAS(volumeNode)))
    slicer.util.updateVolumeFromArray(node, np.clip(array.astype(np.float32), 0.0, 1.0))
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def setHeatmapDisplay(heatmapNode, threshold: float | None = None) -> None:
    """Inferno, fixed window 0–1 (scores are comparable across volumes), cold areas hidden."""
    display = heatmapNode.GetDisplayNode()
    if display is None:
        heatmapNode.CreateDefaultDisplayNodes()
        display = heatmapNode.GetDisplayNode()
    wasModifying = display.StartModify()
    display.SetAndObserveColorNodeID(heatmapColorTable(heatmapNode.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.AutoThresholdOff()
    if threshold is not None:
        display.SetThreshold(float(threshold), 1.0)
    display.ApplyThresholdOn()
    display.EndModify(wasModifying)


def showHeatmap(volumeNode, heatmapNode, opacity: float = 0.3, threshold: float = 0.2) -> None:
    """Input as background, heatmap as foreground of every slice view (Red/Yellow/Green)."""
    setHeatmapDisplay(heatmapNode, threshold)
    slicer.util.setSliceViewerLayers(background=volumeNode, foreground=heatmapNode,
                                     foregroundOpacity=float(opacity))


def setForegroundOpacity(scene, opacity: float) -> None:
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(float(opacity))


def loadCandidates(volumeNode, path):
    """Candidate fiducials (world positions as the CLI wrote them) under the input's transform."""
    scene = volumeNode.GetScene()
    loaded = readMarkupsJson(path, scene, "candidates-loading")
    world = controlPointsWorldRAS(loaded)
    labels = [loaded.GetNthControlPointLabel(n) for n in range(loaded.GetNumberOfControlPoints())]
    descriptions = [loaded.GetNthControlPointDescription(n) for n in range(loaded.GetNumberOfControlPoints())]
    storage = loaded.GetStorageNode()
    scene.RemoveNode(loaded)
    if storage is not None:
        scene.RemoveNode(storage)
    node = _resultNode(volumeNode, "candidates", "vtkMRMLMarkupsFiducialNode", f"{volumeNode.GetName()} candidates")
    wasModifying = node.StartModify()
    node.RemoveAllControlPoints()
    node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    for n, position in enumerate(world):
        index = node.AddControlPointWorld(position.tolist(), labels[n])
        node.SetNthControlPointDescription(index, descriptions[n])
        node.SetNthControlPointLocked(index, True)
    node.EndModify(wasModifying)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetSelectedColor(*CANDIDATE_COLOR)
    display.SetColor(*CANDIDATE_COLOR)
    display.SetGlyphScale(2.0)
    display.SetTextScale(2.5)
    return node


SIZE_COLUMNS = tuple(c for c in CANDIDATE_COLUMNS if c.startswith("size_"))   # i, j, k in mm


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def candidateRows(csvPath, labels: list[str]) -> list[dict]:
    """The candidates CSV's row for each markups label (empty where the CSV lacks it)."""
    if csvPath is None:
        return [{} for _ in labels]
    with Path(csvPath).open(newline="", encoding="utf-8") as fh:
        byLabel = {row.get("label"): row for row in csv.DictReader(fh)}
    return [byLabel.get(label, {}) for label in labels]


def _sizeText(row: dict) -> str:
    """"5.1 × 3.2 × 4.0" (mm, i × j × k) from the CSV's size columns that hold a number."""
    sizes = [_number(row.get(c)) for c in SIZE_COLUMNS if row.get(c) not in (None, "")]
    return " × ".join(f"{v:.1f}" for v in sizes if v == v)


def candidateTable(volumeNode, candidatesNode, csvPath=None):
    """Table node with one row per candidate (world RAS, like the slice views' readout)."""
    table = _resultNode(volumeNode, "table", "vtkMRMLTableNode", f"{volumeNode.GetName()} candidates table")
    table.RemoveAllColumns()
    world = controlPointsWorldRAS(candidatesNode)
    count = candidatesNode.GetNumberOfControlPoints()
    names = [candidatesNode.GetNthControlPointLabel(n) for n in range(count)]
    rows = candidateRows(csvPath, names)
    labels = vtkStringArray()
    labels.SetName("Label")
    columns = {"Score": [_number(row.get("score")) for row in rows],
               "R": world[:, 0].tolist(), "A": world[:, 1].tolist(), "S": world[:, 2].tolist()}
    for name in names:
        labels.InsertNextValue(name)
    table.AddColumn(labels)
    for name, values in columns.items():
        array = vtkDoubleArray()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(float(value))
        table.AddColumn(array)
    sizes = [_sizeText(row) for row in rows]
    if any(sizes):
        text = vtkStringArray()
        text.SetName("Size (mm)")
        for value in sizes:
            text.InsertNextValue(value)
        table.AddColumn(text)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)
    return table


def jumpToCandidate(candidatesNode, index: int) -> list[float]:
    """Centre every slice view on candidate ``index``; returns its world RAS position."""
    position = [0.0, 0.0, 0.0]
    candidatesNode.GetNthControlPointPositionWorld(int(index), position)
    slicer.vtkMRMLSliceNode.JumpAllSlices(candidatesNode.GetScene(), *position,
                                          slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return position
