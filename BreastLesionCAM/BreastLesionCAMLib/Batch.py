"""Batch Detect: every volume of a folder or of a cohort, one score per volume in a table.

A screening reader works through a worklist, not one volume: the panel runs one
``blcam detect`` process over all of them (the model loads once), then shows
``detections.csv`` as a table sorted by volume score, most suspicious first. Clicking a row
opens that volume with its heatmap and candidates (:func:`openBatchRow`), ready for review.

Qt-free, like the Logic: tested with real MRML from slicer-core.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import slicer
from vtk import vtkDoubleArray, vtkStringArray

from blcam.detect.outputs import SUMMARY_FILE
from blcam.errors import BlcamError
from blcam.io.volume import VOLUME_SUFFIXES, read_volume

from .NodeIO import ijkToRASOf

FOLDER_ATTRIBUTE = "BreastLesionCAM.BatchFolder"     # the table's Detect output folder
KIND = "BreastLesionCAM.BatchTable"
TEXT_COLUMNS = ("Name", "Patient", "Label", "Volume")
NUMBER_COLUMNS = ("Score", "Candidates")
READ_COLUMNS = ("name", "volume", "volume_score", "candidates")   # of detect's SUMMARY_COLUMNS


def batchInputs(path) -> list[Path]:
    """What to pass to ``blcam detect``: a cohort CSV as it is, or a folder's volume files."""
    path = Path(str(path or "").strip())
    if not str(path) or str(path) == ".":
        raise BlcamError("choose a folder of volumes or a cohort CSV for batch Detect")
    if path.is_file() and path.suffix.lower() == ".csv":
        return [path]
    if not path.is_dir():
        raise BlcamError(f"{path}: not a folder of volumes or a cohort CSV")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    if not found:
        raise BlcamError(f"{path}: holds no volume file ({', '.join(VOLUME_SUFFIXES)})")
    return found


def loadBatchTable(scene, outFolder, name: str = "Batch Detect"):
    """``detections.csv`` of ``outFolder`` as a table node, most suspicious volume first."""
    path = Path(outFolder) / SUMMARY_FILE
    if not path.is_file():
        raise BlcamError(f"{path}: missing; did batch Detect finish?")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in READ_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BlcamError(f"{path}: not a blcam detect summary (no {', '.join(missing)} column)")
        rows = list(reader)

    def score(row) -> float:
        try:
            return float(row["volume_score"])
        except (TypeError, ValueError):          # empty, or missing in a short row
            return math.nan

    scored = sorted(((score(r), r) for r in rows), key=lambda sr: math.inf if math.isnan(sr[0]) else -sr[0])
    scores, rows = [sc for sc, _ in scored], [r for _, r in scored]      # unscored volumes last
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table.SetAttribute(KIND, "1")
    table.SetAttribute(FOLDER_ATTRIBUTE, str(Path(outFolder).resolve()))
    values = {"Name": [r["name"] for r in rows], "Patient": [r.get("patient", "") for r in rows],
              "Label": [r.get("label", "") for r in rows], "Volume": [r["volume"] for r in rows],
              "Score": scores, "Candidates": [float(r["candidates"] or 0) for r in rows]}
    for column in ("Name", "Patient", "Label", "Score", "Candidates", "Volume"):
        array = vtkDoubleArray() if column in NUMBER_COLUMNS else vtkStringArray()
        array.SetName(column)
        for value in values[column]:
            array.InsertNextValue(value)
        table.AddColumn(array)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)
    return table


def batchRow(table, row: int) -> dict:
    """One row of a batch table as a dict of its columns."""
    t = table.GetTable()
    if not 0 <= int(row) < t.GetNumberOfRows():
        raise BlcamError(f"row {int(row) + 1} is not in the batch table ({t.GetNumberOfRows()} rows)")
    return {c: t.GetColumnByName(c).GetValue(int(row)) for c in (*TEXT_COLUMNS, *NUMBER_COLUMNS)}


def openBatchRow(table, row: int):
    """Load row ``row``'s volume into the scene (once; a second click reuses the node) and
    return it with the Detect output folder and the name its files carry there."""
    info = batchRow(table, row)
    folder = Path(table.GetAttribute(FOLDER_ATTRIBUTE) or "")
    scene = table.GetScene()
    attribute = "BreastLesionCAM.BatchVolume"
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
        if node.GetAttribute(attribute) == info["Volume"]:
            return node, folder, info["Name"]
    # The file's own array and grid (not Slicer's reader, which flips a left-handed file's k
    # axis): Detect's heatmap was written on exactly this grid, and a DICOM folder reads too.
    array, geometry = read_volume(info["Volume"])
    node = slicer.util.addVolumeFromArray(array, ijkToRASOf(geometry), name=info["Name"])
    node.SetAttribute(attribute, info["Volume"])
    return node, folder, info["Name"]

