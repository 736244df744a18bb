"""``blcam evaluate-detection``: score a ``blcam detect`` output folder against a cohort.

Detections are matched to cohort rows by the volume's absolute path (``detections.csv``
records it), so a detection run over the held-out volumes of a cohort is scored against
that cohort's annotations without any renaming. Lesion masks, where they exist, come from a
``mask`` column of the cohort CSV or from a folder holding a label map with each volume's
file name (the phantom's ``masks/``); without a mask a lesion is hit within ``hit_mm`` of
its annotated centre.

Where a lesion table gives each lesion's kind and diameter (``--lesions``, or the phantom's
``lesions.csv`` beside the cohort CSV), the metrics are also broken down per kind and size
(:mod:`blcam.metrics.breakdown`); the candidate and volume scores' calibration is measured
in every case (:mod:`blcam.metrics.calibration`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Container
from pathlib import Path

import numpy as np

from ..axes import PathLike
from ..cohort import read_cohort
from ..detect.outputs import SUMMARY_FILE
from ..errors import BlcamError
from ..io.atomic import json_safe, write_json_atomic, write_text_atomic
from ..io.volume import read_volume
from ..metrics.breakdown import (
    breakdown,
    breakdown_tables,
    find_lesion_table,
    md_table,
    plot_froc_by_group,
    read_lesion_table,
)
from ..metrics.calibration import bins_table, calibration, calibration_table, plot_calibration
from ..metrics.localisation import FROC_RATES, VolumeDetections, VolumeTruth, evaluate_localisation, plot_froc
from ..score_calibration import logit


def load_detections(det_dir: PathLike) -> dict[str, VolumeDetections]:
    """``detections.csv`` + per-volume candidate JSON → detections keyed by absolute volume path."""
    det_dir = Path(det_dir)
    summary = det_dir / SUMMARY_FILE
    if not summary.is_file():
        raise BlcamError(f"{det_dir}: no detections.csv; run 'blcam detect ... --out {det_dir}' first")
    out = {}
    try:
        with summary.open(newline="", encoding="utf-8") as fh:
            for row_no, row in enumerate(csv.DictReader(fh), 2):
                try:
                    out[str(Path(row["volume"]).resolve())] = _row_detections(det_dir, row)
                except (OSError, KeyError, ValueError, TypeError) as exc:
                    raise BlcamError(f"{summary} row {row_no}: unreadable detection row {_short(row)} "
                                     f"({type(exc).__name__}: {exc})") from None
    except UnicodeDecodeError:
        raise BlcamError(f"{summary}: not UTF-8 text; was it written by 'blcam detect'?") from None
    return out


def _row_detections(det_dir: Path, row: dict) -> VolumeDetections:
    """One ``detections.csv`` row and its candidates file; a short or edited row (``None``
    cells, text for numbers) raises a KeyError/TypeError/ValueError the caller names."""
    if None in row or any(v is None for v in row.values()):
        raise ValueError("wrong number of cells")
    doc = json.loads((det_dir / row["candidates_json"]).read_text(encoding="utf-8"))
    cands = doc["candidates"]
    points = np.array([[c["x"], c["y"], c["z"]] for c in cands], float).reshape(-1, 3)
    scores = np.array([c["score"] for c in cands], float)
    logits = np.array([c["crop_logit"] for c in cands], float) if all("crop_logit" in c for c in cands) else None
    calibrated = doc.get("calibration") is not None
    vlogit = doc.get("volume_logit")
    if vlogit is None and not calibrated:     # Detect before volume_logit: the score is its plain sigmoid
        vlogit = float(logit(float(row["volume_score"])))
    return VolumeDetections(row["name"], points, scores, float(row["volume_score"]), logits,
                            None if vlogit is None else float(vlogit), calibrated)


def _short(row: dict, limit: int = 80) -> str:
    text = ",".join(str(v) for v in row.values() if v is not None)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _mask_column(cohort_csv: Path) -> dict[int, str]:
    """CSV line number → value of an optional ``mask`` column."""
    with cohort_csv.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        masks = {}
        for row in reader:          # line_num: the line the row ends on, as read_cohort reports it
            masks[reader.line_num] = (row.get("mask") or "").strip()
        return masks


def load_truths(cohort_csv: PathLike, masks_dir: PathLike | None = None, hit_mm: float = 10.0,
                only: Container[str] | None = None) -> list[tuple[str, VolumeTruth]]:
    """Cohort rows (optionally only those whose absolute volume path is in ``only``) as truths."""
    cohort_csv = Path(cohort_csv)
    cohort = read_cohort(cohort_csv)
    column = _mask_column(cohort_csv)
    out = []
    for r in cohort.rows:
        key = str(r.volume.resolve())
        if only is not None and key not in only:
            continue
        mask_path = None
        if column.get(r.row):
            mask_path = (cohort_csv.parent / column[r.row]).resolve()
        elif masks_dir is not None and (Path(masks_dir) / r.volume.name).exists():
            mask_path = Path(masks_dir) / r.volume.name
        assert r.geometry is not None            # read_cohort read every volume's header
        mask, geometry = read_volume(mask_path) if mask_path is not None else (None, r.geometry)
        if mask is not None and mask.shape != r.geometry.shape:
            raise BlcamError(f"{cohort_csv} row {r.row}: mask {mask_path} has shape {mask.shape}, "
                             f"volume has {r.geometry.shape}")
        out.append((key, VolumeTruth.with_mask(r.volume.name, r.label == "lesion", r.centres_lps, mask,
                                               geometry, hit_mm)))
    return out


def markdown_report(result: dict, title: str) -> str:
    f = result["froc"]
    lines = [f"# {title}", "",
             f"{result['volumes']} volumes ({result['lesion_volumes']} with lesions), {result['lesions']} lesions; "
             f"hit = inside the lesion mask, or within {result['hit_mm']:g} mm of the centre without one.", "",
             "| metric | value |", "| --- | --- |",
             f"| pointing game | {result['pointing_game']:.3f} |",
             f"| peak-to-centre distance, median (mean) | {result['distance_mm_median']:.2f} mm "
             f"({result['distance_mm_mean']:.2f} mm) |",
             f"| FROC mean sensitivity (0.125–8 FP/volume) | {f['mean_sensitivity']:.3f} |",
             f"| volume AUC | {result['volume_auc']:.3f} |",
             f"| mean peak − centre offset of hits, voxels (k, j, i) | {_offset(result)} |", "",
             "| FP per volume | " + " | ".join(f"{r:g}" for r in FROC_RATES) + " |",
             "| --- |" + " --- |" * len(FROC_RATES),
             "| sensitivity | " + " | ".join(f"{s:.3f}" for s in f["sensitivity"]) + " |", ""]
    tables = breakdown_tables(result)
    if tables:
        b = result["breakdown"]
        lines += ["## Per lesion kind and size", "",
                  f"From {b['lesion_table']}; {b['unmatched']} of {result['lesions']} lesions had no row there "
                  "('unknown'). FROC per group counts that group's lesions only; false positives are shared.", ""]
        lines += [part for rows in tables.values() for part in (md_table(rows), "")]
    cal = result["calibration"]
    lines += ["## Calibration of the scores", "",
              "ECE: count-weighted mean |mean score − observed fraction| over 10 equal-width score bins; "
              "Brier: mean squared error of the score as a probability.", "",
              md_table(calibration_table(cal)), "", md_table(bins_table(cal)), ""]
    return "\n".join(lines)


def figure_paths(out: PathLike) -> dict[str, Path]:
    """The PNGs :func:`evaluate_detection` writes beside ``out`` (the by-kind FROC only when kinds exist)."""
    out = Path(out)
    return {name: out.with_name(f"{out.stem}_{name}.png") for name in ("froc", "froc_by_kind", "calibration")}


def _offset(result: dict) -> str:
    off = result.get("offset_kji_voxels_mean")
    return "–" if off is None else ", ".join(f"{v:+.1f}" for v in off)


def evaluate_detection(det_dir: PathLike, cohort_csv: PathLike, out: PathLike | None = None,
                       masks_dir: PathLike | None = None, hit_mm: float = 10.0,
                       lesions: PathLike | None = None) -> dict:
    """Localisation metrics of a detection folder; with ``out`` (.json) also ``.md`` and the PNGs of
    :func:`figure_paths`. ``lesions``: a lesion table (kind, diameter) for the breakdown; by
    default ``lesions.csv`` beside the cohort CSV, if it has the columns."""
    if not hit_mm > 0:
        raise BlcamError(f"--hit-mm must be positive, got {hit_mm}")
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise BlcamError(f"--masks {masks_dir}: no such folder (give the folder of lesion label maps, "
                         "or leave --masks out to score by centres)")
    table_path = Path(lesions) if lesions is not None else find_lesion_table(cohort_csv)
    table = read_lesion_table(table_path) if table_path is not None else None
    dets = load_detections(det_dir)
    truths = load_truths(cohort_csv, masks_dir, hit_mm, only=set(dets))
    if not truths:
        raise BlcamError(f"{det_dir}: none of its volumes is in {cohort_csv}")
    truth_list, det_list = [t for _, t in truths], [dets[k] for k, _ in truths]
    result = evaluate_localisation(truth_list, det_list, hit_mm)
    result.update({"detections": str(det_dir), "cohort": str(cohort_csv),
                   "masks": sum(t.mask is not None for _, t in truths)})
    if table is not None:
        result["breakdown"] = {"lesion_table": str(table_path),
                               **breakdown(truth_list, det_list, result["per_lesion"], *table, hit_mm)}
    result["calibration"] = calibration(truth_list, det_list, hit_mm)
    if out is not None:
        out = Path(out)
        if out.suffix != ".json":
            raise BlcamError(f"--out {out}: give a .json path (the Markdown and FROC plot go beside it)")
        title = f"Localisation on {Path(det_dir).name}"
        write_json_atomic(out, json_safe(result))
        write_text_atomic(out.with_suffix(".md"), markdown_report(result, title))
        figures = figure_paths(out)
        plot_froc(figures["froc"], result)
        plot_calibration(figures["calibration"], result["calibration"])
        kinds = result.get("breakdown", {}).get("kind")
        if kinds:
            plot_froc_by_group(figures["froc_by_kind"], kinds, f"FROC per lesion kind, {Path(det_dir).name}")
        else:  # a by-kind plot from an earlier run with a lesion table would no longer match the JSON
            figures["froc_by_kind"].unlink(missing_ok=True)
    return result

