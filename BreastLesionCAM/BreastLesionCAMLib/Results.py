"""Detect's files into MRML nodes, shown the way a radiologist reads them.

* heatmap: a scalar volume with *exactly* the input's IJK-to-RAS matrix and parent transform
  (the file is checked against the geometry that was sent, then its voxels are put on the
  input's own grid), the Inferno colour table (:mod:`.ColorTable`), window 0–1 and a lower
  threshold so cold areas stay transparent; shown as the 30 % foreground of every slice view;
* candidates: a fiducial node read by Slicer's markups storage (LPS → RAS handled there),
  placed under the input's parent transform with unchanged world positions;
* a table node (label, score, R, A, S and the CLI's size estimate i × j × k when present) that the
  panel shows; selecting a row jumps all slice views to that candidate.

Nodes made for an input are tagged with its ID and reused by the next Detect on it, so
re-running does not pile up copies.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray

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

    def summary(self) -> str:
        count = self.candidates.GetNumberOfControlPoints()
        return f"{count} candidate(s)" + (f", files in {self.folder}" if self.folder is not None else "")


def findOutputs(folder) -> tuple[Path, Path, Path | None]:
    """The heatmap, candidates markups and candidates CSV that ``blcam detect`` wrote."""
    folder = Path(folder)
    heatmaps = sorted(folder.glob("*_heatmap.nrrd"))
    if len(heatmaps) != 1:
        raise BlcamError(f"{folder}: expected one *_heatmap.nrrd from blcam detect, found {len(heatmaps)}")
    stem = heatmaps[0].name[: -len("_heatmap.nrrd")]
    markups = folder / f"{stem}_candidates.mrk.json"
    if not markups.exists():
        raise BlcamError(f"{markups}: candidates file missing from blcam detect's output")
    table = folder / f"{stem}_candidates.csv"
    return heatmaps[0], markups, table if table.exists() else None


def loadResults(volumeNode, folder, sentGeometry: Geometry, opacity: float = 0.3,
                threshold: float = 0.2) -> DetectionResult:
    """Turn one Detect output folder into nodes next to ``volumeNode`` and show them."""
    heatmapPath, markupsPath, csvPath = findOutputs(folder)
    heatmap = loadHeatmap(volumeNode, heatmapPath, sentGeometry)
    candidates = loadCandidates(volumeNode, markupsPath)
    table = candidateTable(volumeNode, candidates, csvPath)
    showHeatmap(volumeNode, heatmap, opacity, threshold)
    return DetectionResult(heatmap, candidates, table, Path(folder))


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


def candidateScore(description: str) -> float:
    """The score ``blcam detect`` put in a control point's description (first number in it)."""
    match = re.search(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", description or "")
    return float(match.group()) if match else float("nan")


def _sizes(csvPath) -> list[str] | None:
    """Per-candidate size text ("5.1 × 3.2 × 4.0") from the CLI's CSV ``size*`` columns, if any."""
    if csvPath is None:
        return None
    with Path(csvPath).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [c for c in (reader.fieldnames or []) if "size" in c.lower()]
        if not columns:
            return None
        sizes = []
        for row in reader:
            try:
                sizes.append(" × ".join(f"{float(row[c]):.1f}" for c in columns))
            except (TypeError, ValueError):
                sizes.append("")
    return sizes


def candidateTable(volumeNode, candidatesNode, csvPath=None):
    """Table node with one row per candidate (world RAS, like the slice views' readout)."""
    table = _resultNode(volumeNode, "table", "vtkMRMLTableNode", f"{volumeNode.GetName()} candidates table")
    table.RemoveAllColumns()
    world = controlPointsWorldRAS(candidatesNode)
    count = candidatesNode.GetNumberOfControlPoints()
    labels = vtkStringArray()
    labels.SetName("Label")
    columns = {"Score": [candidateScore(candidatesNode.GetNthControlPointDescription(n)) for n in range(count)],
               "R": world[:, 0].tolist(), "A": world[:, 1].tolist(), "S": world[:, 2].tolist()}
    for n in range(count):
        labels.InsertNextValue(candidatesNode.GetNthControlPointLabel(n))
    table.AddColumn(labels)
    for name, values in columns.items():
        array = vtkDoubleArray()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(float(value))
        table.AddColumn(array)
    sizes = _sizes(csvPath)
    if sizes is not None and len(sizes) == count:
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
