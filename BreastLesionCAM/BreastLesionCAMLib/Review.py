"""The review loop: a reader's verdict on each Detect candidate becomes the next training data.

The radiologist marks each candidate *lesion* or *not lesion* (the panel binds keys to
:func:`setVerdict`). Verdicts live on the candidates node itself, keyed by control-point ID
(so they survive reordering and deleting points, and are saved with the scene), and show in
the candidates table's "Verdict" column and in the views: a rejected point is drawn
unselected (Slicer's second markups colour). :func:`addReviewedCase` then puts the volume
into the dataset: accepted candidates join its lesion centres, rejected ones go to its
``negatives`` file, which the next ``blcam export`` cuts as label-0 patches (the cohort
column of that name). As in MONAI Label's active learning, every reviewed study makes the
next model better where the current one erred.

Qt-free, like the Logic: tested with real MRML from slicer-core.
"""

from __future__ import annotations

import json

import numpy as np
from vtk import vtkStringArray

from blcam.errors import BlcamError

from .Dataset import CaseRecord, addCase
from .NodeIO import controlPointsWorldRAS

LESION, NOT_LESION = "lesion", "not lesion"
VERDICTS = (LESION, NOT_LESION)
VERDICT_ATTRIBUTE = "BreastLesionCAM.Verdicts"   # JSON {control point ID: verdict}
VERDICT_COLUMN = "Verdict"
DUPLICATE_MM = 1.0   # an accepted candidate this close to an existing centre is that centre


def _stored(candidatesNode) -> dict:
    try:
        return json.loads(candidatesNode.GetAttribute(VERDICT_ATTRIBUTE) or "{}")
    except ValueError:
        return {}


def verdicts(candidatesNode) -> list[str | None]:
    """The verdict of each control point, in point order (``None``: not reviewed yet)."""
    stored = _stored(candidatesNode)
    return [stored.get(candidatesNode.GetNthControlPointID(n))
            for n in range(candidatesNode.GetNumberOfControlPoints())]


def setVerdict(candidatesNode, index: int, verdict: str | None, table=None) -> None:
    """Record ``verdict`` (``"lesion"``, ``"not lesion"`` or ``None`` to clear) for candidate
    ``index``, and show it in ``table`` (the candidates table) when given."""
    count = candidatesNode.GetNumberOfControlPoints()
    if not 0 <= int(index) < count:
        raise BlcamError(f"candidate {int(index) + 1} does not exist ({count} candidates)")
    if verdict is not None and verdict not in VERDICTS:
        raise BlcamError(f"unknown verdict '{verdict}'; use one of {', '.join(VERDICTS)}")
    stored = _stored(candidatesNode)
    pointId = candidatesNode.GetNthControlPointID(int(index))
    if verdict is None:
        stored.pop(pointId, None)
    else:
        stored[pointId] = verdict
    live = {candidatesNode.GetNthControlPointID(n) for n in range(count)}
    candidatesNode.SetAttribute(VERDICT_ATTRIBUTE, json.dumps({k: v for k, v in stored.items() if k in live}))
    candidatesNode.SetNthControlPointSelected(int(index), verdict != NOT_LESION)
    if table is not None:
        showVerdicts(candidatesNode, table)


def showVerdicts(candidatesNode, table) -> None:
    """Write every candidate's verdict into the table's "Verdict" column (added if missing)."""
    values = verdicts(candidatesNode)
    vtkTable = table.GetTable()
    column = vtkTable.GetColumnByName(VERDICT_COLUMN)
    if column is None:
        column = vtkStringArray()
        column.SetName(VERDICT_COLUMN)
        column.SetNumberOfValues(vtkTable.GetNumberOfRows())
        table.AddColumn(column)
    for n, value in enumerate(values[:vtkTable.GetNumberOfRows()]):
        column.SetValue(n, value or "")
    column.Modified()
    table.Modified()


def nextUnreviewed(candidatesNode, after: int = -1) -> int | None:
    """The first candidate after ``after`` without a verdict (wrapping round), for the
    keyboard flow: mark, and the panel jumps to the next one."""
    values = verdicts(candidatesNode)
    order = list(range(after + 1, len(values))) + list(range(0, after + 1))
    return next((n for n in order if values[n] is None), None)


def reviewedPoints(candidatesNode) -> tuple[np.ndarray, np.ndarray]:
    """World RAS positions of the accepted and of the rejected candidates."""
    world = controlPointsWorldRAS(candidatesNode)
    values = verdicts(candidatesNode)
    accepted = [p for p, v in zip(world, values) if v == LESION]
    rejected = [p for p, v in zip(world, values) if v == NOT_LESION]
    return np.asarray(accepted, float).reshape(-1, 3), np.asarray(rejected, float).reshape(-1, 3)


def _addCentres(node, points: np.ndarray) -> None:
    """Add ``points`` to the centres ``node``, except one within :data:`DUPLICATE_MM` of a centre."""
    existing = controlPointsWorldRAS(node)
    for p in points:
        if len(existing) and np.min(np.linalg.norm(existing - p, axis=1)) < DUPLICATE_MM:
            continue
        node.AddControlPointWorld(*[float(v) for v in p], f"lesion-{node.GetNumberOfControlPoints() + 1}")
        existing = np.vstack([existing, p[None]])


def addReviewedCase(volumeNode, candidatesNode, datasetFolder, patientId: str, centresNode=None) -> CaseRecord:
    """Put the reviewed volume into the dataset ("Add case" after review).

    Accepted candidates are added to ``centresNode`` (created when ``None``; one within
    :data:`DUPLICATE_MM` of an existing centre is that centre), rejected ones become the
    case's reviewed negatives, and the volume is labelled ``lesion`` when it has any centre,
    else ``healthy``. Refuses when nothing has been reviewed, so a click on "Add case" before
    reviewing cannot file a lesion volume as healthy.
    """
    if candidatesNode is None:
        raise BlcamError("run Detect and review its candidates first")
    accepted, rejected = reviewedPoints(candidatesNode)
    if len(accepted) == 0 and len(rejected) == 0 and controlPointsWorldRAS(centresNode).size == 0:
        raise BlcamError("no candidate has a verdict yet: mark each as lesion or not lesion first")
    scene = candidatesNode.GetScene()
    if centresNode is None:
        centresNode = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{volumeNode.GetName()} lesion centres")
    _addCentres(centresNode, accepted)
    label = "lesion" if centresNode.GetNumberOfControlPoints() else "healthy"
    return addCase(volumeNode, datasetFolder, patientId, label, centresNode if label == "lesion" else None,
                   negativesRAS=rejected)
