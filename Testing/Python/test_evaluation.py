"""Table 2 on a split, the leak guard, and cross-validation's mean ± sd report."""

import json

import numpy as np
import pytest

from _training_fixtures import (
    blob_dataset,
    one_thread,  # noqa: F401 (autouse)
    tiny_config,
    trained_run,
)
from blcam.cli import main
from blcam.errors import BlcamError
from blcam.evaluation import cross_validate, evaluate_model
from blcam.evaluation.patch_classification import METRICS, MODES
from blcam.model import read_metadata
from blcam.score_calibration import logit, sigmoid


def test_evaluate_cli_writes_json_markdown_and_roc(tmp_path_factory, tmp_path, capsys):
    run, data = trained_run(tmp_path_factory), blob_dataset(tmp_path_factory)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(run), str(data), "--split", "test", "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["modes"]) == set(MODES)
    assert result["modes"]["patch"]["input"] == "12x48x48" and result["modes"]["random"]["input"] == "8x32x32"
    labels = np.array([p["label"] for p in result["patches"]])
    for mode in MODES:
        m, probs = result["modes"][mode], np.array([p[mode] for p in result["patches"]])
        assert m["accuracy"] == pytest.approx(np.mean((probs >= 0.5) == labels))
        assert m["n"] == len(labels) == result["n"]
        assert set(METRICS) <= m.keys()
    md = (tmp_path / "metrics.md").read_text(encoding="utf-8")
    assert "| Central point location | Center |" in md and "| Test set |" in md
    assert f"{result['modes']['centre']['auc']:.4f}" in md
    assert (tmp_path / "metrics_roc.png").stat().st_size > 5000
    assert "| Metric | AUC | Accuracy |" in capsys.readouterr().out
    # Same seed, same random crops: scores reproduce exactly.
    again = evaluate_model(run, data, split="test", progress=False, device="cpu")
    assert [p["random"] for p in again["patches"]] == [p["random"] for p in result["patches"]]


def test_evaluating_training_patches_is_refused(tmp_path_factory):
    run, data = trained_run(tmp_path_factory), blob_dataset(tmp_path_factory)
    with pytest.raises(BlcamError, match="trained on fold 1's patches"):
        evaluate_model(run, data, split="fold:1", progress=False)
    with pytest.raises(BlcamError, match="use 'test' or 'fold:K'"):
        evaluate_model(run, data, split="train", progress=False)


def test_cross_validation_reports_mean_sd_and_test_row(tmp_path_factory, tmp_path):
    data = blob_dataset(tmp_path_factory)
    cfg = tiny_config(epochs=1)
    report = cross_validate(data, tmp_path / "cv", cfg, progress=False, ensemble=True)
    assert report["folds"] == 3
    for mode in MODES:
        for metric in METRICS:
            per_fold = []
            for k in range(3):
                fold_json = tmp_path / "cv" / f"fold{k}" / f"evaluation_fold-{k}.json"
                fold = json.loads(fold_json.read_text(encoding="utf-8"))
                assert fold["split"] == f"fold:{k}"
                per_fold.append(fold["modes"][mode][metric])
            v = np.array([np.nan if x is None else x for x in per_fold], float)
            v = v[np.isfinite(v)]
            assert report["cv"][mode][metric]["mean"] == pytest.approx(v.mean())
            if v.size > 1:
                assert report["cv"][mode][metric]["sd"] == pytest.approx(v.std(ddof=1))
    full = json.loads((tmp_path / "cv" / "full" / "evaluation_test.json").read_text(encoding="utf-8"))
    assert report["test"]["centre"]["auc"] == full["modes"]["centre"]["auc"]
    md = (tmp_path / "cv" / "cv.md").read_text(encoding="utf-8")
    assert "| 3-fold CV |" in md and "| Test set |" in md and " ± " in md
    # The fold models as one ensemble, scored on the test split: its probabilities are the
    # sigmoid of the mean of the fold models' logits on every test patch.
    assert "| Test set, ensemble of the 3 fold models |" in md
    ens = json.loads((tmp_path / "cv" / "evaluation_ensemble_test.json").read_text(encoding="utf-8"))
    assert read_metadata(report["ensemble"])["ensemble"]["members"] == 3
    assert report["test_ensemble"]["centre"]["auc"] == ens["modes"]["centre"]["auc"]
    folds = [evaluate_model(tmp_path / "cv" / f"fold{k}", data, "test", progress=False) for k in range(3)]
    for mode in MODES:
        probs = np.array([[p[mode] for p in f["patches"]] for f in folds])
        exact = np.all((probs > 1e-6) & (probs < 1 - 1e-6), axis=0)     # logit() clips beyond these
        assert exact.mean() > 0.9
        expected = sigmoid(np.mean(logit(probs), axis=0))
        np.testing.assert_allclose(np.array([p[mode] for p in ens["patches"]])[exact], expected[exact], atol=1e-5)
    # A rerun reuses finished folds instead of training again.
    stamp = (tmp_path / "cv" / "fold0" / "model.safetensors").stat().st_mtime_ns
    ens_stamp = (tmp_path / "cv" / "ensemble.safetensors").stat().st_mtime_ns
    cross_validate(data, tmp_path / "cv", cfg, progress=False)
    assert (tmp_path / "cv" / "fold0" / "model.safetensors").stat().st_mtime_ns == stamp
    again = cross_validate(data, tmp_path / "cv", cfg, progress=False, ensemble=True)
    assert (tmp_path / "cv" / "ensemble.safetensors").stat().st_mtime_ns == ens_stamp    # scored: not rewritten
    assert again["test_ensemble"] == report["test_ensemble"]
    with pytest.raises(BlcamError, match="exported with 3 folds"):
        cross_validate(data, tmp_path / "cv", cfg, folds=5, progress=False)
