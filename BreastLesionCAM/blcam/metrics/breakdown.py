"""Localisation per lesion kind and per lesion size, where a lesion table gives them.

A detector that finds large cysts and misses small irregular masses can still have a good
overall FROC; the clinically interesting lesions are the latter, so the metrics are also
reported per group. Kind and size are not in a cohort CSV (the annotation is one click per
lesion); they come from a lesion table, ``volume,x,y,z[,kind][,diameter_mm]`` with ``volume``
the volume file's stem and the centre in LPS mm, as the phantom's ``lesions.csv`` is.

Each annotated lesion is matched to the nearest table row of its volume. The annotation is a
click, not the centroid the table holds (the phantom's clicks deviate by ~1 mm per axis, as
an expert's would), so a row matches within ``max(MATCH_MM, diameter_mm / 2)``: the click lies
inside the lesion, hence within about its radius of the centre. Lesions without a match (or
without a kind or diameter in their row) form an ``unknown`` group, so every lesion is
counted in each breakdown.

Per group: lesions, pointing game, median peak-to-centre distance, and the FROC counting only
the group's lesions (:func:`.localisation.froc` with ``include``): false positives are shared
by every group, and a hit on another group's lesion is neither true nor false positive.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..axes import PathLike
from ..errors import BlcamError
from .localisation import VolumeDetections, VolumeTruth, froc

SIZE_BINS_MM = (5.0, 10.0)  # < 5, 5–10, ≥ 10 mm: sub-centimetre lesions are the hard, early ones
MATCH_MM = 1.0
REQUIRED_COLUMNS = ("volume", "x", "y", "z")
UNKNOWN = "unknown"


@dataclass
class TableLesion:
    """One row of a lesion table (``row``: its CSV line number, for messages)."""

    volume: str
    centre_lps: np.ndarray
    kind: str | None
    diameter_mm: float | None
    row: int


def volume_stem(name: str) -> str:
    """``P0001_L.nii.gz`` → ``P0001_L``: the volume name the phantom's tables and ``blcam detect`` use."""
    suffixes = "".join(Path(name).suffixes)
    return name[: -len(suffixes)] if suffixes else name


def _columns(path: Path) -> list[str] | None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            names = csv.DictReader(fh).fieldnames
            return None if names is None else list(names)
    except (OSError, UnicodeDecodeError):
        return None


def find_lesion_table(cohort_csv: PathLike) -> Path | None:
    """``lesions.csv`` beside the cohort CSV when it has the required columns (the phantom writes one)."""
    path = Path(cohort_csv).parent / "lesions.csv"
    columns = _columns(path) if path.is_file() else None
    return path if columns and set(REQUIRED_COLUMNS) <= set(columns) else None


def read_lesion_table(path: PathLike) -> tuple[list[TableLesion], set[str]]:
    """Rows and the optional columns present (``kind``, ``diameter_mm``).

    Bad input (missing columns, text for numbers) → BlcamError naming the file and row.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise BlcamError(f"{path}: lesion table lacks the column(s) {', '.join(missing)} "
                                 f"(needs {','.join(REQUIRED_COLUMNS)}, optional kind,diameter_mm)")
            rows = [_table_row(path, reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise BlcamError(f"--lesions {path}: no such file") from None
    except UnicodeDecodeError:
        raise BlcamError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise BlcamError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return rows, {c for c in ("kind", "diameter_mm") if c in columns}


def _table_row(path: Path, line: int, row: dict) -> TableLesion:
    def number(col: str, optional: bool = False) -> float | None:
        text = (row.get(col) or "").strip()
        if optional and not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value) or (optional and value <= 0):
            what = "a positive number" if optional else "a number"
            raise BlcamError(f"{path} row {line}: {col} must be {what}, got {text!r}")
        return value

    if None in row or not (row.get("volume") or "").strip():
        raise BlcamError(f"{path} row {line}: wrong number of cells or no volume name")
    centre = np.array([number(c) for c in "xyz"])
    kind = (row.get("kind") or "").strip() or None
    return TableLesion(row["volume"].strip(), centre, kind, number("diameter_mm", optional=True), line)


def match_lesions(truths: list[VolumeTruth], table: list[TableLesion]) -> list[list[TableLesion | None]]:
    """Per volume, per annotated lesion: its table row or None (module doc: tolerance).

    Greedy by distance within each volume, so two nearby lesions never share one row.
    """
    by_volume: dict[str, list[TableLesion]] = {}
    for t in table:
        by_volume.setdefault(t.volume, []).append(t)
    out = []
    for truth in truths:
        rows = by_volume.get(volume_stem(truth.name), [])
        matched: list[TableLesion | None] = [None] * len(truth.centres_lps)
        pairs = sorted((float(np.linalg.norm(c - r.centre_lps)), n, m)
                       for n, c in enumerate(truth.centres_lps) for m, r in enumerate(rows))
        used = set()
        for d, n, m in pairs:
            if matched[n] is None and m not in used and d <= max(MATCH_MM, (rows[m].diameter_mm or 0) / 2):
                matched[n] = rows[m]
                used.add(m)
        out.append(matched)
    return out


def size_group(diameter_mm: float | None) -> str:
    """The size bin of a diameter (:data:`SIZE_BINS_MM`), e.g. ``5–10 mm``."""
    if diameter_mm is None:
        return UNKNOWN
    if diameter_mm < SIZE_BINS_MM[0]:
        return f"< {SIZE_BINS_MM[0]:g} mm"
    for lo, hi in zip(SIZE_BINS_MM, SIZE_BINS_MM[1:]):
        if diameter_mm < hi:
            return f"{lo:g}–{hi:g} mm"
    return f"≥ {SIZE_BINS_MM[-1]:g} mm"


def size_order() -> list[str]:
    return [size_group(0.0)] + [size_group(e) for e in SIZE_BINS_MM] + [UNKNOWN]


def breakdown(truths: list[VolumeTruth], dets: list[VolumeDetections], per_lesion: list[dict],
              table: list[TableLesion], columns: set[str], hit_mm: float) -> dict:
    """Per-kind and per-size metrics; also writes ``kind``/``diameter_mm`` into ``per_lesion`` rows.

    ``per_lesion`` is :func:`.localisation.evaluate_localisation`'s, one row per lesion in
    truth order.
    """
    matches = match_lesions(truths, table)
    keyed = []  # ((volume index, lesion index), row, table match)
    rows = iter(per_lesion)
    for v, matched in enumerate(matches):
        for n, match in enumerate(matched):
            row = next(rows)
            row["kind"] = match.kind if match and match.kind else UNKNOWN
            row["diameter_mm"] = match.diameter_mm if match else None
            keyed.append(((v, n), row))
    result = {"unmatched": sum(m is None for matched in matches for m in matched),
              "size_bins_mm": list(SIZE_BINS_MM)}
    if "kind" in columns:
        kinds = sorted({r["kind"] for _, r in keyed} - {UNKNOWN}) + [UNKNOWN]
        result["kind"] = _groups(truths, dets, keyed, kinds, lambda r: r["kind"], hit_mm)
    if "diameter_mm" in columns:
        result["size"] = _groups(truths, dets, keyed, size_order(), lambda r: size_group(r["diameter_mm"]), hit_mm)
    return result


def _groups(truths: list[VolumeTruth], dets: list[VolumeDetections], keyed: list[tuple[tuple[int, int], dict]],
            order: Iterable[str], group_of: Callable[[dict], str | None], hit_mm: float) -> dict:
    out = {}
    for name in order:
        members = [(key, r) for key, r in keyed if group_of(r) == name]
        if not members:
            continue
        hits = np.array([r["hit"] for _, r in members], bool)
        dist = np.array([r["distance_mm"] for _, r in members], float)
        f = froc(truths, dets, hit_mm, include={key for key, _ in members})
        out[name] = {"lesions": len(members), "pointing_game": float(hits.mean()),
                     "distance_mm_median": float(np.nanmedian(dist)) if np.isfinite(dist).any() else float("nan"),
                     "froc_mean_sensitivity": f["mean_sensitivity"], "froc_sensitivity": f["sensitivity"],
                     "curve_fp_per_volume": f["curve_fp_per_volume"], "curve_sensitivity": f["curve_sensitivity"]}
    return out


def breakdown_tables(result: dict) -> dict[str, list[list[str]]]:
    """Header + rows per breakdown (``kind``, ``size``) for the Markdown and HTML reports."""
    tables = {}
    for key, label in (("kind", "lesion kind"), ("size", "diameter")):
        groups = (result.get("breakdown") or {}).get(key)
        if groups:
            tables[key] = [[label, "lesions", "pointing game", "median distance (mm)", "FROC mean sensitivity"]]
            tables[key] += [[name, str(g["lesions"]), fmt(g["pointing_game"]), fmt(g["distance_mm_median"], 2),
                             fmt(g["froc_mean_sensitivity"])] for name, g in groups.items()]
    return tables


def fmt(value: float | None, digits: int = 3, missing: str = "n/a") -> str:
    """A metric for a report table; NaN (no lesions, no candidates) and None read ``missing``."""
    return missing if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def md_table(rows: list[list[str]]) -> str:
    """A Markdown table from header + rows."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def plot_froc_by_group(path: PathLike, groups: dict, title: str) -> None:
    """One FROC line per group (e.g. per lesion kind) on the common false-positive axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .localisation import froc_axes, froc_step, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, g in groups.items():
        froc_step(ax, g, label=f"{name} ({g['lesions']}): {g['froc_mean_sensitivity']:.3f}")
    froc_axes(ax)
    ax.legend(loc="lower right", fontsize=8, title="group (lesions): mean sensitivity", title_fontsize=8)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
