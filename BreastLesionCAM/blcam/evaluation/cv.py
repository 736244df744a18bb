"""``blcam cv``: k-fold cross-validation by patient plus the test-set model (paper, Table 2).

Folds are the ones the export assigned (by patient, stratified by class), so no patient's
patches are ever on both sides. For each fold K a model trains on the other folds and is
scored on fold K in the three input modes; then one model trains on all training folds
and is scored on the test split. The report gives mean ± sd (sample sd, ddof = 1) over
folds and the test row, in the paper's layout. With ``ensemble=True`` the fold models are
also written as one ensemble (``ensemble.safetensors``, :mod:`blcam.ensemble`: the mean of
their logits, as nnU-Net ensembles its fold models) and scored on the test split as a row
of its own; Detect takes it like any model. It is opt-in: it holds every fold's weights
(~0.7 GB for five full-width ResNet-18s), and on the phantom two models trained alike made
the same mistakes (``bench/RESULTS.md``, "Ensembles").

Restartable: a fold whose evaluation file exists is not redone, and a fold whose training
was interrupted resumes from its ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..axes import PathLike
from ..ensemble import write_ensemble
from ..errors import BlcamError
from ..io.atomic import json_safe, write_json_atomic, write_text_atomic
from ..io.locks import folder_lock
from ..patches.dataset import load_dataset
from ..training import TrainConfig, train_model
from ..training.checkpoint import LAST
from .patch_classification import METRICS, MODES, evaluate_model
from .report import markdown_table

ENSEMBLE = "ensemble.safetensors"     # the fold models as one model file (ensemble=True)
ENSEMBLE_EVALUATION = "evaluation_ensemble_test.json"


def _mean_sd(values: list[float]) -> dict:
    v = np.array([np.nan if x is None else x for x in values], float)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if v.size else float("nan")
    sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": int(v.size)}


def _run_and_score(dataset_root: PathLike, run_dir: Path, config: TrainConfig, split: str, progress: bool,
                   on_epoch: Callable[[dict], bool | None] | None) -> dict:
    eval_file = run_dir / f"evaluation_{split.replace(':', '-')}.json"
    if eval_file.is_file():
        return json.loads(eval_file.read_text(encoding="utf-8"))
    resume = (run_dir / LAST).is_file()
    model = train_model(dataset_root, run_dir, config, progress=progress, on_epoch=on_epoch, resume=resume)
    return evaluate_model(model, dataset_root, split=split, out=eval_file, device=config.device,
                          batch_size=config.batch_size, seed=config.seed, resident=config.resident,
                          workers=config.workers, progress=progress)


def cross_validate(dataset_root: PathLike, out_dir: PathLike, config: TrainConfig, folds: int | None = None,
                   progress: bool = True, on_epoch: Callable[[str, dict], bool | None] | None = None,
                   ensemble: bool = False) -> dict:
    """Train and score every fold and the test model; writes ``cv.json`` and ``cv.md``.

    ``folds`` must match the export (it is a check, not a choice: folds are fixed when the
    patches are exported). ``on_epoch(run_name, record)`` follows each training's epochs.
    Holds ``out_dir``'s folder lock (each fold's run folder is locked by its training too).
    """
    with folder_lock(out_dir, purpose="cross-validating there"):
        return _cross_validate_locked(dataset_root, out_dir, config, folds, progress, on_epoch, ensemble)


def _cross_validate_locked(dataset_root: PathLike, out_dir: PathLike, config: TrainConfig, folds: int | None,
                           progress: bool, on_epoch: Callable[[str, dict], bool | None] | None,
                           ensemble: bool) -> dict:
    out_dir = Path(out_dir)
    ds = load_dataset(dataset_root)
    n_folds = int(ds.info["settings"]["folds"])
    if folds is not None and folds != n_folds:
        raise BlcamError(f"--folds {folds}: {ds.root} was exported with {n_folds} folds; "
                         f"re-export with --folds {folds} or drop --folds")
    if n_folds < 2:
        raise BlcamError(f"{ds.root}: cross-validation needs at least 2 folds, the export has {n_folds}")
    runs = [(f"fold{k}", k, f"fold:{k}") for k in range(n_folds)] + [("full", None, "test")]
    results = {}
    for name, fold, split in runs:
        cb = (lambda rec, _n=name: on_epoch(_n, rec)) if on_epoch is not None else None
        results[name] = _run_and_score(dataset_root, out_dir / name, dataclasses.replace(config, fold=fold),
                                       split, progress, cb)
    summary = {m: {metric: _mean_sd([results[f"fold{k}"]["modes"][m][metric] for k in range(n_folds)])
                   for metric in METRICS} for m in MODES}
    test = {m: {metric: results["full"]["modes"][m][metric] for metric in METRICS} for m in MODES}
    report = {"dataset": str(ds.root), "folds": n_folds, "config": config.to_dict(),
              "crop": results["full"]["crop"], "patch": results["full"]["patch"],
              "cv": summary, "test": test,
              "per_fold": {f"fold{k}": {m: {metric: results[f'fold{k}']['modes'][m][metric] for metric in METRICS}
                                        for m in MODES} for k in range(n_folds)}}
    rows = {f"{n_folds}-fold CV": summary, "Test set": test}
    if ensemble:
        report["ensemble"] = str(_fold_ensemble(dataset_root, out_dir, config, n_folds, progress))
        ens = json.loads((out_dir / ENSEMBLE_EVALUATION).read_text(encoding="utf-8"))
        report["test_ensemble"] = rows[f"Test set, ensemble of the {n_folds} fold models"] = \
            {m: {metric: ens["modes"][m][metric] for metric in METRICS} for m in MODES}
    write_json_atomic(out_dir / "cv.json", json_safe(report))
    table = markdown_table(rows, report,
                           f"Accuracy and AUC ({n_folds}-fold CV by patient, and test set)")
    write_text_atomic(out_dir / "cv.md", table)
    return report


def _fold_ensemble(dataset_root: PathLike, out_dir: Path, config: TrainConfig, n_folds: int, progress: bool) -> Path:
    """Write the fold models as one ensemble and score it on the test split, once: like a fold
    whose evaluation exists, a scored ensemble is not redone (nor its file, every fold's weights,
    written again) by a rerun."""
    model, scored = out_dir / ENSEMBLE, (out_dir / ENSEMBLE_EVALUATION).is_file()
    if not (scored and model.is_file()):
        write_ensemble([out_dir / f"fold{k}" for k in range(n_folds)], model, replace=True)
    if not scored:
        evaluate_model(model, dataset_root, split="test", out=out_dir / ENSEMBLE_EVALUATION, device=config.device,
                       batch_size=config.batch_size, seed=config.seed, resident=config.resident,
                       workers=config.workers, progress=progress)
    return model
