"""The dataset folder the panel builds case by case: ``cohort.csv``, ``volumes/``, ``annotations/``.

It is exactly the cohort format of ``blcam export`` (README "Data conventions"; the project's
shared ``design.md`` §1), so the folder made in Slicer also works from the command line, and
a cohort prepared elsewhere can be extended in Slicer. Adding a case writes the volume (world
geometry) and its lesion centres (LPS), then rewrites ``cohort.csv`` atomically with the new
row. Adding the same volume of the same patient again (e.g. after moving a centre) replaces
its files and its row instead of duplicating it; other rows, extra columns (``birads``, ...)
and their order are kept. A case may carry reviewed negatives (places a reader rejected,
:mod:`.Review`): they go to ``annotations/<case>_negatives.mrk.json`` and the cohort's
optional ``negatives`` column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blcam.cohort import LABELS, NEGATIVES_COLUMN, REQUIRED_COLUMNS
from blcam.errors import BlcamError
from blcam.io.atomic import safe_name, write_csv_atomic

from .NodeIO import controlPointsWorldRAS, geometryOf, writeCentres, writePointsRAS, writeVolumeNode

COHORT_NAME = "cohort.csv"


@dataclass
class CaseRecord:
    """What :func:`addCase` wrote: the cohort row and the files behind it."""

    patient: str
    volume: str            # relative to the dataset folder, as in the CSV
    label: str
    annotation: str        # "" for a healthy volume
    centres: int
    replaced: bool         # True when an existing row was updated
    cohort: Path


def safeName(text: str) -> str:
    """A file-name-safe version of a patient ID or node name (no leading dot: no hidden files)."""
    return safe_name(text, "case", strip="-.")


def readCohortRows(path: Path) -> tuple[list[str], list[dict]]:
    """Header and rows of an existing cohort CSV (empty if the file does not exist)."""
    if not path.exists():
        return list(REQUIRED_COLUMNS), []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise BlcamError(f"{path}: missing column(s) {', '.join(missing)}; not a cohort CSV")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    return header, [r for r in rows if any(r.values())]


def writeCohortRows(path: Path, header: list[str], rows: list[dict]) -> None:
    write_csv_atomic(path, rows, header, ignore_extra=True)


def addCase(volumeNode, datasetFolder, patientId: str, label: str, centresNode=None,
            negativesRAS=None) -> CaseRecord:
    """Write one annotated volume into the dataset folder and its row into ``cohort.csv``
    (with ``negativesRAS``, world RAS points if any, as the case's reviewed negatives)."""
    if volumeNode is None:
        raise BlcamError("select the input volume of the case")
    if not str(datasetFolder or "").strip():
        raise BlcamError("choose a dataset folder first")
    patient = (patientId or "").strip()
    if not patient or "," in patient or "\n" in patient:
        raise BlcamError(f"patient ID '{patientId}' is empty or contains a comma/newline")
    label = (label or "").strip().lower()
    if label not in LABELS:
        raise BlcamError(f"volume label '{label}' must be 'healthy' or 'lesion'")
    centres = controlPointsWorldRAS(centresNode)
    if label == "lesion" and len(centres) == 0:
        raise BlcamError("a lesion volume needs at least one lesion centre: place a point on each lesion")
    if label == "healthy" and len(centres) > 0:
        raise BlcamError(f"'{volumeNode.GetName()}' is labelled healthy but has {len(centres)} lesion "
                         "centre(s); label it 'lesion' or remove the points")
    _checkInside(volumeNode, centres)
    negatives = np.zeros((0, 3)) if negativesRAS is None else np.asarray(negativesRAS, float).reshape(-1, 3)
    _checkInside(volumeNode, negatives, "reviewed negative")

    folder = Path(datasetFolder)
    stem = safeName(f"{patient}_{volumeNode.GetName()}")
    volumeRel = f"volumes/{stem}.nrrd"
    annotationRel = f"annotations/{stem}.mrk.json" if label == "lesion" else ""
    negativesRel = f"annotations/{stem}_negatives.mrk.json" if len(negatives) else ""
    cohortPath = folder / COHORT_NAME
    header, rows = readCohortRows(cohortPath)  # fail on a broken CSV before writing anything

    writeVolumeNode(volumeNode, folder / volumeRel)
    if annotationRel:
        writeCentres(centresNode, folder / annotationRel)
    elif (folder / f"annotations/{stem}.mrk.json").exists():
        (folder / f"annotations/{stem}.mrk.json").unlink()  # relabelled healthy: drop stale centres
    if negativesRel:
        writePointsRAS(negatives, folder / negativesRel, [f"negative-{n + 1}" for n in range(len(negatives))])
        if NEGATIVES_COLUMN not in header:
            header.append(NEGATIVES_COLUMN)

    row = {c: "" for c in header}
    row.update(patient=patient, volume=volumeRel, label=label, annotation=annotationRel)
    if negativesRel:
        row[NEGATIVES_COLUMN] = negativesRel
    matches = [n for n, r in enumerate(rows) if _samePath(folder, r.get("volume", ""), volumeRel)]
    if matches:
        for key in (*REQUIRED_COLUMNS, *([NEGATIVES_COLUMN] if negativesRel else [])):
            rows[matches[0]][key] = row[key]
        for n in reversed(matches[1:]):
            del rows[n]
    else:
        rows.append(row)
    writeCohortRows(cohortPath, header, rows)
    return CaseRecord(patient, volumeRel, label, annotationRel, len(centres), bool(matches), cohortPath)


def _samePath(folder: Path, a: str, b: str) -> bool:
    return bool(a) and (folder / a).resolve() == (folder / b).resolve()


def _checkInside(volumeNode, centresRAS: np.ndarray, what: str = "lesion centre") -> None:
    """Refuse points outside the volume: almost always a point placed on the wrong volume."""
    if len(centresRAS) == 0:
        return
    geometry = geometryOf(volumeNode)
    index = geometry.lps_to_index(centresRAS * np.array([-1.0, -1.0, 1.0]))
    size = np.asarray(geometry.size, float)
    for n, idx in enumerate(index, 1):
        if np.any(idx < -0.5) or np.any(idx > size - 0.5):
            raise BlcamError(f"{what} {n} lies outside '{volumeNode.GetName()}' "
                             f"(voxel i,j,k = {idx[0]:.1f}, {idx[1]:.1f}, {idx[2]:.1f}; size "
                             f"{tuple(int(s) for s in size)}); was it placed on another volume?")


def summarizeCohort(datasetFolder) -> str:
    """One line for the panel: how many volumes and patients the dataset holds so far."""
    if not str(datasetFolder or "").strip():
        return "No dataset folder chosen."
    path = Path(datasetFolder) / COHORT_NAME
    if not path.exists():
        return "Empty dataset: add the first case."
    try:
        _, rows = readCohortRows(path)
    except (BlcamError, OSError, UnicodeDecodeError, csv.Error) as exc:
        return f"Cannot read {path.name}: {exc}"
    classes: dict[str, str] = {}
    for r in rows:
        if r.get("label", "").lower() == "lesion":
            classes[r["patient"]] = "lesion"
        else:
            classes.setdefault(r.get("patient", ""), "healthy")
    lesion = sum(1 for c in classes.values() if c == "lesion")
    centres = sum(1 for r in rows if r.get("annotation"))
    exported = " Patches exported." if (Path(datasetFolder) / "patches" / "manifest.csv").exists() else ""
    return (f"{len(rows)} volume(s) of {len(classes)} patient(s): {lesion} lesion, "
            f"{len(classes) - lesion} healthy; {centres} annotated volume(s).{exported}")
