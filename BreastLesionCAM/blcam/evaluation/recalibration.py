"""``blcam calibrate``: fit a model's score maps on Detect's output for validation volumes.

Input: a model, the folder ``blcam detect`` wrote for volumes of patients the model never
trained on (a validation fold, or patients set aside), and their cohort CSV with lesion
centres (and masks, where known). Each candidate is labelled by the hit test of the
localisation metrics (inside the lesion mask, else within ``hit_mm`` of a centre), each
volume by its cohort label; :func:`blcam.score_calibration.fit_platt` fits the candidate and
the volume map on the network's raw logits, which Detect writes beside every score. The model
file gets them in its metadata (weights untouched); a report shows the reliability on the
fitting volumes before and after.

Fitting on volumes the network trained on would teach the map that its training-set
confidence is the truth, and it would over-promise on new patients. So when the model's
patch dataset is still where training left it, any volume of a training patient (the
training split without the validation fold under ``--fold``) is refused by name.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..axes import PathLike
from ..errors import BlcamError
from ..io.atomic import json_safe, write_json_atomic, write_text_atomic
from ..metrics.breakdown import md_table
from ..metrics.calibration import calibration_table, plot_calibration, scores_reliability
from ..metrics.localisation import hit_matrix
from ..model import read_metadata, replace_metadata, resolve_model_path
from ..score_calibration import FORMAT, Platt, ScoreCalibration, fit_platt
from .detection import load_detections, load_truths

FEW_HITS = 10          # below this many hits (or lesion volumes) the fit is reported as uncertain


def training_split(meta: dict) -> tuple[Path, list[dict], list[dict]] | None:
    """(cohort CSV, training records, held-out records) of the run a model file records: the
    training split without fold K under ``--fold K`` (then fold K is held out), else the
    test split held out; None when its patch dataset is not here to say (a model file copied
    to another machine)."""
    from ..patches.dataset import load_dataset
    from ..training.loop import split_records

    training = meta.get("training") or {}
    root = training.get("dataset")
    if not root or not (Path(root) / "manifest.csv").is_file():
        return None
    ds = load_dataset(root)
    train, held, _ = split_records(ds, training.get("fold"))
    return Path(ds.info["cohort"]).resolve(), train, held


def training_volumes(meta: dict) -> tuple[set[str], set[str], Path] | None:
    """(resolved volume paths, patient ids, cohort CSV) the model trained on; None as for
    :func:`training_split`."""
    split = training_split(meta)
    if split is None:
        return None
    cohort, train, _ = split
    return ({str((cohort.parent / r["volume"]).resolve()) for r in train}, {r["patient"] for r in train}, cohort)


def check_not_trained_on(meta: dict, model_file: Path, cohort_csv: Path, rows: list[tuple[str, str]]) -> str:
    """Refuse calibration volumes ``(resolved path, patient)`` the model trained on (module doc);
    returns a warning when that cannot be checked (said after a successful fit)."""
    seen = training_volumes(meta)
    if seen is None:
        return (f"{model_file}: its patch dataset is not here, so it cannot be checked that these volumes were "
                "not used in training; calibrate only on patients it never saw")
    volumes, patients, cohort = seen
    same_cohort = Path(cohort_csv).resolve() == cohort
    leaked = sorted({f"{patient} ({Path(path).name})" for path, patient in rows
                     if path in volumes or (same_cohort and patient in patients)})
    if leaked:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise BlcamError(f"{cohort_csv}: {len(leaked)} patient(s) of these detections trained {model_file}: "
                         f"{shown}. Calibrating on them would make its scores over-confident; detect on a "
                         "validation fold or on patients set aside, and calibrate on those")
    return ""


def calibrate_model(model: PathLike, det_dir: PathLike, cohort_csv: PathLike, out: PathLike | None = None,
                    masks_dir: PathLike | None = None, hit_mm: float = 10.0, report: PathLike | None = None) -> dict:
    """Fit and store the score maps (module doc); returns the report record. ``out``: the
    calibrated model file (default: the model itself, rewritten atomically); ``report``: a
    .json path, with .md and _calibration.png beside it (default: ``det_dir/calibration.json``)."""
    if not hit_mm > 0:
        raise BlcamError(f"--hit-mm must be positive, got {hit_mm}")
    model_file = resolve_model_path(model)
    meta = read_metadata(model_file)
    report_path = Path(report) if report is not None else Path(det_dir) / "calibration.json"
    if report_path.suffix != ".json":
        raise BlcamError(f"--report {report_path}: give a .json path (the Markdown and the plot go beside it)")
    dets = load_detections(det_dir)
    truths = load_truths(cohort_csv, masks_dir, hit_mm, only=set(dets))
    if not truths:
        raise BlcamError(f"{det_dir}: none of its volumes is in {cohort_csv}")
    patient_of = {str(r.volume.resolve()): r.patient for r in _cohort_rows(cohort_csv)}
    warnings = [check_not_trained_on(meta, model_file, Path(cohort_csv), [(k, patient_of[k]) for k, _ in truths]),
                _other_model(det_dir, model_file)]
    logits, hits, vol_logits, lesion = [], [], [], []
    for key, truth in truths:
        d = dets[key]
        if d.logits is None or d.volume_logit is None:
            raise BlcamError(f"{det_dir}: {d.name}'s candidates file has no raw logits (written by an older "
                             "'blcam detect'); run Detect again with this version")
        logits.append(d.logits)
        hits.append(hit_matrix(d.points_lps, truth, hit_mm).any(axis=1))
        vol_logits.append(d.volume_logit)
        lesion.append(truth.lesion)
    x, y = np.concatenate(logits), np.concatenate(hits)
    cand = fit_platt(x, y, "candidate scores")
    vol = fit_platt(vol_logits, lesion, "volume scores")
    n_hits, n_lesion_volumes = int(y.sum()), int(sum(lesion))
    record = {"format": FORMAT, "candidate": [cand.a, cand.b], "volume": [vol.a, vol.b],
              "volumes": len(truths), "lesion_volumes": n_lesion_volumes, "candidates": int(len(x)),
              "hits": n_hits, "hit_mm": hit_mm, "masks": sum(t.mask is not None for _, t in truths),
              "detections": str(Path(det_dir).resolve()), "cohort": str(Path(cohort_csv).resolve()),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    target = replace_metadata(model_file, {**meta, "calibration": record}, out)
    fit = _fit_report(record, x, y, np.asarray(vol_logits), np.asarray(lesion, float), target)
    _write_report(report_path, fit)
    fit["report"] = str(report_path.with_suffix(".md"))
    fit["plot"] = str(_plot_path(report_path))
    if min(n_hits, n_lesion_volumes) < FEW_HITS:
        warnings.append(f"fitted on {n_hits} hits in {n_lesion_volumes} lesion volumes; with fewer than {FEW_HITS} "
                        "of either the maps are uncertain: calibrate on more volumes")
    for text in filter(None, warnings):
        print(f"blcam calibrate: {text}", file=sys.stderr)
    return fit


def calibrate_on_fold(run: PathLike, device: str = "cpu", progress: bool = True,
                      on_progress: Callable[[dict], None] | None = None) -> dict:
    """``blcam train --fold K --calibrate``: Detect on the volumes of fold K's patients, which
    the run validated on and never trained on, then :func:`calibrate_model` the run's model in
    place. Outputs go to ``RUN/calibration/`` (the fold's cohort CSV, detections, report).
    ``on_progress``: Detect's progress records on those volumes (the Slicer panel shows them)."""
    from ..cohort import write_cohort_subset
    from ..detect.pipeline import DetectSettings, detect

    model_file = resolve_model_path(run)
    meta = read_metadata(model_file)
    training = meta.get("training") or {}
    fold = training.get("fold")
    if fold is None:
        raise BlcamError(f"{model_file}: was not trained with --fold K, so no patients are left to calibrate on; "
                         "train with --fold K, or run 'blcam calibrate' on patients set aside")
    split = training_split(meta)
    if split is None:
        raise BlcamError(f"{model_file}: its patch dataset {training.get('dataset')} is gone, so fold {fold}'s "
                         "patients are unknown; run 'blcam calibrate' on their detections instead")
    cohort_csv, _, held = split
    folder = Path(run) / "calibration"
    cohort = write_cohort_subset(cohort_csv, {r["patient"] for r in held}, folder / "cohort.csv",
                                 f"fold {fold}'s patients")
    detect(run, [cohort], folder / "detections", DetectSettings(overlays=0), device, progress=progress,
           on_progress=on_progress)
    return calibrate_model(run, folder / "detections", cohort, report=folder / "calibration.json")


def _cohort_rows(cohort_csv: PathLike) -> list:
    from ..cohort import read_cohort
    return read_cohort(cohort_csv, check_volumes=False).rows


def _other_model(det_dir: PathLike, model_file: Path) -> str:
    """A warning when the detections name another model file (a copy is fine: same weights)."""
    for path in sorted(Path(det_dir).glob("*_candidates.json"))[:1]:
        made_by = json.loads(path.read_text(encoding="utf-8")).get("model")
        if made_by and Path(made_by).resolve() != model_file.resolve():
            return (f"{det_dir} was made by {made_by}, not {model_file}; the maps are fitted to that model's "
                    "logits, so make sure it has the same weights")
    return ""


def _fit_report(record: dict, x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, target: Path) -> dict:
    """Reliability before (raw sigmoid) and after (the fitted maps) on the fitting volumes."""
    cal = ScoreCalibration(Platt(*record["candidate"]), Platt(*record["volume"]), record)
    after = scores_reliability(cal.candidate(x), y, cal.volume(vx), vy, raw=(x, vx))
    return {"model": str(target), "calibration": record, "reliability": after}


def _write_report(path: Path, fit: dict) -> None:
    rec, rel = fit["calibration"], fit["reliability"]
    write_json_atomic(path, json_safe(fit))
    lines = [f"# Score calibration of {Path(fit['model']).name}", "",
             f"Fitted on {rec['volumes']} volumes ({rec['lesion_volumes']} with lesions): {rec['candidates']} "
             f"candidates, {rec['hits']} of them hits (inside a lesion mask, or within {rec['hit_mm']:g} mm of "
             "a centre without one).", "",
             f"- candidate score = sigmoid({rec['candidate'][0]:.4f} · crop logit {rec['candidate'][1]:+.4f})",
             f"- volume score = sigmoid({rec['volume'][0]:.4f} · top crop logit {rec['volume'][1]:+.4f})", "",
             "Reliability on the fitting volumes themselves (in-sample; score held-out volumes with "
             "'blcam evaluate-detection' to see it on new patients):", "",
             md_table(calibration_table(rel)), ""]
    write_text_atomic(path.with_suffix(".md"), "\n".join(lines))
    plot_calibration(_plot_path(path), rel)


def _plot_path(report: Path) -> Path:
    return report.with_name(f"{report.stem}_calibration.png")


def fit_summary(fit: dict) -> dict:
    """What a GUI shows of a fit (the ``calibration`` of a command's ``done`` progress record):
    where the model and report are, what it was fitted on, and the calibration errors on those
    volumes before and after."""
    rec, rel = fit["calibration"], fit["reliability"]
    return {"model": fit["model"], "volumes": rec["volumes"], "lesion_volumes": rec["lesion_volumes"],
            "hits": rec["hits"], "candidate_ece_raw": rel["raw"]["candidate"]["ece"], "candidate_ece": rel["ece"],
            "volume_ece_raw": rel["raw"]["volume"]["ece"], "volume_ece": rel["volume"]["ece"],
            "report": fit["report"], "plot": fit["plot"]}
