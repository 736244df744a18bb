"""Lesion-centre annotations: Slicer markups (``.mrk.json``), legacy ``.fcsv`` and point CSVs.

Every reader returns an ``(N, 3)`` array of **LPS** millimetres, whatever the file declared:
Slicer shows RAS but writes either, and mixing them up mirrors a lesion to the other side of
the breast. Each control point is one lesion centre.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..errors import BlcamError
from .atomic import write_json_atomic

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                  "Markups/Resources/Schema/markups-schema-v1.0.3.json#")
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def read_points(path: str | os.PathLike) -> np.ndarray:
    """Read lesion centres from any supported file as LPS millimetres, shape ``(N, 3)``."""
    path = Path(path)
    if not path.is_file():
        raise BlcamError(f"{path}: annotation file not found")
    name = path.name.lower()
    if name.endswith(".json"):
        points = _read_markups_json(path)
    elif name.endswith(".fcsv"):
        points = _read_fcsv(path)
    elif name.endswith(".csv"):
        points = _read_points_csv(path)
    else:
        raise BlcamError(f"{path}: unknown annotation format; use .mrk.json, .fcsv or a CSV of x,y,z (LPS mm)")
    if len(points) == 0:
        raise BlcamError(f"{path}: annotation holds no lesion centre")
    if not np.all(np.isfinite(points)):
        raise BlcamError(f"{path}: annotation holds a non-finite coordinate")
    return points


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a Latin-1 export or a binary file is one clear error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BlcamError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                         "save the annotation as UTF-8") from None
    except OSError as exc:
        raise BlcamError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _xyz(values: object, where: str) -> np.ndarray:
    """Three finite-or-not numbers as a float vector, or an error naming the point."""
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise BlcamError(f"{where}: needs 3 coordinates x,y,z, got {values!r}")
    try:
        return np.asarray([float(v) for v in values], float)
    except (TypeError, ValueError):
        raise BlcamError(f"{where}: coordinates must be numbers, got {values!r}") from None


def _read_markups_json(path: Path) -> np.ndarray:
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise BlcamError(f"{path}: not a readable markups JSON file ({exc})") from None
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise BlcamError(f"{path}: no 'markups' list; is this a Slicer .mrk.json file?")
    points = []
    for m, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise BlcamError(f"{path}: markup {m} is {markup!r}, not a markup object")
        system = str(markup.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise BlcamError(f"{path}: markup {m} has unknown coordinateSystem '{system}'")
        control_points = markup.get("controlPoints", [])
        if not isinstance(control_points, list):
            raise BlcamError(f"{path}: markup {m} 'controlPoints' is {control_points!r}, not a list")
        for c, cp in enumerate(control_points):
            where = f"{path} markup {m} control point {c}"
            if not isinstance(cp, dict):
                raise BlcamError(f"{where}: is {cp!r}, not a control point object")
            if cp.get("positionStatus", "defined") != "defined":
                continue
            xyz = _xyz(cp.get("position"), f"{where} 'position'")
            points.append(xyz * RAS_TO_LPS if system == "RAS" else xyz)
    return np.asarray(points, float).reshape(-1, 3)


def _read_fcsv(path: Path) -> np.ndarray:
    system = "RAS"  # legacy files without the header line are RAS
    points = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip().lower() == "coordinatesystem":
                value = value.strip().upper()
                system = {"0": "RAS", "1": "LPS"}.get(value, value)
                if system not in ("RAS", "LPS"):
                    raise BlcamError(f"{path}: unsupported CoordinateSystem '{value}'")
            continue
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) < 4:
            raise BlcamError(f"{path} line {lineno}: cannot read x,y,z from '{line.strip()}' (needs id,x,y,z,...)")
        xyz = _xyz(fields[1:4], f"{path} line {lineno}")
        points.append(xyz * RAS_TO_LPS if system == "RAS" else xyz)
    return np.asarray(points, float).reshape(-1, 3)


def _read_points_csv(path: Path) -> np.ndarray:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if not {"x", "y", "z"} <= set(fields):
        raise BlcamError(f"{path}: point CSV needs columns x,y,z (LPS mm); found {fields}")
    points = []
    for row in reader:
        row_no = reader.line_num
        row = {k.strip().lower(): v for k, v in row.items() if k}
        points.append(_xyz([row.get(a) for a in "xyz"], f"{path} row {row_no}: x,y,z"))
    return np.asarray(points, float).reshape(-1, 3)


def markups_document(points_lps: ArrayLike, labels: Sequence[str] | None = None,
                     descriptions: Sequence[str] | None = None, name: str = "lesions") -> dict:
    """A Slicer ``Fiducial`` markups document (LPS) with one control point per row."""
    points_lps = np.asarray(points_lps, float).reshape(-1, 3)
    labels = labels or [f"lesion-{n + 1}" for n in range(len(points_lps))]
    descriptions = descriptions or [""] * len(points_lps)
    control_points = [{
        "id": str(n + 1), "label": labels[n], "description": descriptions[n], "associatedNodeID": "",
        "position": [round(float(v), 6) for v in p], "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
        "selected": True, "locked": False, "visibility": True, "positionStatus": "defined",
    } for n, p in enumerate(points_lps)]
    return {"@schema": MARKUPS_SCHEMA, "markups": [{
        "type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": False,
        "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points_lps), "name": name,
        "controlPoints": control_points, "measurements": [],
    }]}


def write_markups(path: str | os.PathLike, points_lps: ArrayLike, labels: Sequence[str] | None = None,
                  descriptions: Sequence[str] | None = None,
                  coordinate_system: str = "LPS") -> None:
    """Write a ``.mrk.json`` atomically; ``coordinate_system='RAS'`` stores RAS positions."""
    doc = markups_document(points_lps, labels, descriptions)
    if coordinate_system.upper() == "RAS":
        markup = doc["markups"][0]
        markup["coordinateSystem"] = "RAS"
        for cp in markup["controlPoints"]:
            cp["position"] = [round(float(v), 6) for v in np.asarray(cp["position"]) * RAS_TO_LPS]
    write_json_atomic(path, doc)
