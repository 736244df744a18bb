"""The cohort CSV: the one input a user prepares (``patient,volume,label,annotation``).

An optional ``negatives`` column names a points file (the annotation formats) of places a
radiologist reviewed and rejected as not a lesion, e.g. Detect candidates marked "not a
lesion" in the panel's review; export cuts a negative patch at each (the review loop).

Reading it validates everything that can be checked without pixel data: columns, labels,
duplicates, missing files, volume headers (3D, single channel), annotations, and that every
lesion centre lies inside its volume. Errors name the CSV row (line number as an editor
shows it) so they can be fixed directly; all of this happens before anything is written.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BlcamError
from .io.atomic import write_csv_atomic
from .io.points import read_points
from .io.volume import Geometry, read_geometry

REQUIRED_COLUMNS = ("patient", "volume", "label", "annotation")
NEGATIVES_COLUMN = "negatives"    # optional: reviewed false positives, a points file per volume
LABELS = ("healthy", "lesion")


@dataclass
class CohortRow:
    """One volume of the cohort, with its lesion centres in LPS mm (empty when healthy)."""

    row: int                      # line number in the CSV (header is line 1)
    patient: str
    volume: Path                  # absolute
    label: str
    annotation: Path | None
    volume_rel: str               # as written in the CSV, for manifests and messages
    centres_lps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    geometry: Geometry | None = None
    negatives: Path | None = None  # reviewed "not a lesion" points (optional column)
    negatives_lps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def where(self) -> str:
        return f"row {self.row}"


@dataclass
class Cohort:
    path: Path
    rows: list[CohortRow]

    def patient_classes(self) -> dict[str, str]:
        """Patient → 'lesion' if any of their volumes is a lesion volume, else 'healthy'."""
        classes: dict[str, str] = {}
        for r in self.rows:
            if r.label == "lesion":
                classes[r.patient] = "lesion"
            else:
                classes.setdefault(r.patient, "healthy")
        return classes


def read_cohort(path: str | os.PathLike, check_volumes: bool = True) -> Cohort:
    """Parse and validate a cohort CSV; raises :class:`BlcamError` naming the row at fault."""
    path = Path(path)
    if not path.is_file():
        raise BlcamError(f"{path}: cohort CSV not found")
    rows = _parse_rows(path)
    if not rows:
        raise BlcamError(f"{path}: cohort is empty (no data rows)")
    _check_duplicates(path, rows)
    cohort = Cohort(path, rows)
    if check_volumes:
        for r in rows:
            _check_row_files(path, r)
    return cohort


def write_cohort_subset(cohort_csv: str | os.PathLike, patients: set[str], out_csv: str | os.PathLike,
                        what: str = "the selected patients") -> Path:
    """The rows of ``cohort_csv`` whose patient is in ``patients``, as a new cohort CSV with
    absolute paths (so it works from any folder); every column is kept. Used for the volumes of
    a held-out split or a validation fold, which Detect and calibration then read."""
    cohort_csv = Path(cohort_csv)
    with cohort_csv.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if r["patient"] in patients]
        columns = reader.fieldnames
    if not rows:
        raise BlcamError(f"{cohort_csv}: no rows of {what}")
    for r in rows:
        for col in ("volume", "annotation", "mask", "negatives"):
            if r.get(col):
                r[col] = str((cohort_csv.parent.resolve() / r[col]).resolve())
    assert columns is not None                     # rows were read, so a header
    write_csv_atomic(out_csv, rows, list(columns))
    return Path(out_csv)


def require_both_classes(cohort: Cohort) -> None:
    """Training data need healthy and lesion patients; detection and its evaluation do not
    (a screening batch may well be all healthy), so only ``export`` calls this."""
    classes = set(cohort.patient_classes().values())
    if len(classes) < 2:
        raise BlcamError(f"{cohort.path}: every patient is '{classes.pop()}'; "
                         "training needs both healthy and lesion patients")


def _parse_rows(path: Path) -> list[CohortRow]:
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise BlcamError(f"{path}: missing column(s) {', '.join(missing)}; "
                                 f"a cohort CSV needs {','.join(REQUIRED_COLUMNS)}")
            rows = []
            for raw in reader:
                line = reader.line_num
                rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                if not any(rec.values()):
                    continue
                rows.append(_make_row(path, base, line, rec))
    except UnicodeDecodeError:
        raise BlcamError(f"{path}: not a UTF-8 text CSV") from None
    return rows


def _make_row(path: Path, base: Path, line: int, rec: dict) -> CohortRow:
    where = f"{path} row {line}"
    if not rec["patient"]:
        raise BlcamError(f"{where}: empty 'patient'")
    if not rec["volume"]:
        raise BlcamError(f"{where}: empty 'volume'")
    label = rec["label"].lower()
    if label not in LABELS:
        raise BlcamError(f"{where}: unknown label '{rec['label']}'; use 'healthy' or 'lesion'")
    annotation = (base / rec["annotation"]).resolve() if rec["annotation"] else None
    if label == "lesion" and annotation is None:
        raise BlcamError(f"{where}: lesion volume '{rec['volume']}' has no annotation "
                         "(a .mrk.json, .fcsv or x,y,z CSV of lesion centres)")
    if label == "healthy" and annotation is not None:
        # Stop rather than guess: either the label or the annotation is wrong, and negatives
        # drawn from an annotated volume would teach the network that its lesion is healthy.
        raise BlcamError(f"{where}: healthy volume '{rec['volume']}' has an annotation "
                         f"('{rec['annotation']}'); label it lesion or remove the annotation")
    negatives = rec.get(NEGATIVES_COLUMN, "")
    return CohortRow(line, rec["patient"], (base / rec["volume"]).resolve(), label, annotation, rec["volume"],
                     negatives=(base / negatives).resolve() if negatives else None)


def _check_duplicates(path: Path, rows: list[CohortRow]) -> None:
    seen: dict[Path, int] = {}
    for r in rows:
        if r.volume in seen:
            raise BlcamError(f"{path} row {r.row}: volume '{r.volume_rel}' is listed twice "
                             f"(also row {seen[r.volume]}); each volume appears once")
        seen[r.volume] = r.row


def _check_row_files(path: Path, r: CohortRow) -> None:
    where = f"{path} row {r.row}"
    if not r.volume.exists():
        raise BlcamError(f"{where}: volume file '{r.volume_rel}' not found")
    try:
        geometry = r.geometry = read_geometry(r.volume)
    except BlcamError as exc:
        raise BlcamError(f"{where}: {exc}") from None
    if r.annotation is not None:
        r.centres_lps = _points_inside(where, r, geometry, r.annotation, "lesion centre")
    if r.negatives is not None:
        r.negatives_lps = _points_inside(where, r, geometry, r.negatives, "reviewed negative")


def _points_inside(where: str, r: CohortRow, geometry: Geometry, path: Path, what: str) -> np.ndarray:
    """The points of ``path`` (LPS mm), each checked to lie inside the row's volume (``geometry``)."""
    try:
        points = read_points(path)
    except BlcamError as exc:
        raise BlcamError(f"{where}: {exc}") from None
    index = geometry.lps_to_index(points)
    size = np.asarray(geometry.size, float)
    for n, (p, idx) in enumerate(zip(points, index), 1):
        if np.any(idx < -0.5) or np.any(idx > size - 0.5):
            raise BlcamError(
                f"{where}: {what} {n} at LPS ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm lies outside "
                f"volume '{r.volume_rel}' (voxel index i,j,k = {idx[0]:.1f}, {idx[1]:.1f}, {idx[2]:.1f}; "
                f"size {tuple(int(s) for s in size)}); is '{path.name}' in the right coordinate system?")
    return points
