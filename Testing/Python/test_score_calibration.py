"""Score calibration (blcam.score_calibration, blcam calibrate): the fit recovers a known map,
Detect applies it without changing any ranking, and training patients are refused."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from _cam_fixtures import write_detect_folder
from _training_fixtures import (
    blob_dataset,
    cohort_subset,
    one_thread,  # noqa: F401 (autouse: the shared run is trained as every other module trains it)
    trained_run,
)
from blcam.cli import main
from blcam.detect.pipeline import DetectSettings, detect
from blcam.errors import BlcamError
from blcam.evaluation.recalibration import calibrate_model
from blcam.io.points import write_markups
from blcam.io.volume import Geometry, read_volume, write_volume
from blcam.model import read_metadata
from blcam.score_calibration import Platt, ScoreCalibration, fit_platt

TRUE_MAP = Platt(2.0, -3.0)


def _standard_errors(x: np.ndarray, p: Platt) -> np.ndarray:
    """Asymptotic standard errors of the maximum-likelihood (a, b): the inverse Fisher information."""
    q = p(x)
    w = q * (1 - q)
    info = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
    return np.sqrt(np.diag(np.linalg.inv(info)))


def test_fit_recovers_a_known_map_and_keeps_every_ranking():
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 1.5, 20_000)
    y = rng.random(x.size) < TRUE_MAP(x)
    fit = fit_platt(x, y, "candidate scores")
    se = _standard_errors(x, TRUE_MAP)
    # Four standard errors (Platt's smoothed targets move the optimum by ~1/N, far less).
    assert abs(fit.a - TRUE_MAP.a) < 4 * se[0] and abs(fit.b - TRUE_MAP.b) < 4 * se[1]
    order = np.argsort(x)
    assert np.all(np.diff(fit(x)[order]) >= 0)                # increasing: no ranking changes
    identity = Platt()
    assert identity([-800.0, 0.0, 800.0]).tolist() == [0.0, 0.5, 1.0]     # no overflow warning
    np.testing.assert_allclose(identity(x[:50]), 1 / (1 + np.exp(-x[:50])), rtol=1e-12)


def test_fit_refuses_one_outcome_and_scores_that_rank_backwards():
    x = np.linspace(-2, 2, 40)
    with pytest.raises(BlcamError, match="volume scores: all 40 are misses"):
        fit_platt(x, np.zeros(40), "volume scores")
    with pytest.raises(BlcamError, match="higher scores do not mean more hits"):
        fit_platt(x, x < -1.0, "candidate scores")


def test_a_tampered_calibration_block_is_refused_by_name(tmp_path, tmp_path_factory):
    run = trained_run(tmp_path_factory)
    state = load_file(str(run / "model.safetensors"))
    meta = read_metadata(run / "model.safetensors")
    for block, message in (({"format": "platt-v1", "candidate": [-1.0, 0.0], "volume": [1.0, 0.0]},
                            "calibration.candidate"),
                           ({"format": "other"}, "not a platt-v1 record")):
        bad = tmp_path / "bad.safetensors"
        save_file(state, str(bad), metadata={"blcam": json.dumps({**meta, "calibration": block})})
        with pytest.raises(BlcamError, match=message) as err:
            read_metadata(bad)
        assert str(bad) in str(err.value)
    assert ScoreCalibration.from_metadata(meta).fitted is False


def test_calibrate_cli_recovers_the_map_of_a_detection_folder(tmp_path, tmp_path_factory):
    """Whole command on a folder whose hits were drawn from a known map: load, hit test, fit."""
    rng = np.random.default_rng(7)
    geom = Geometry((40, 40, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    centre = geom.index_to_lps(np.array([[20.0, 20.0, 10.0]]))[0]
    rows, volumes = [], []
    for n in range(150):
        name, lesion = f"V{n:03d}", n % 5 != 0
        write_volume(tmp_path / f"{name}.nrrd", np.zeros((20, 40, 40), np.float32), geom)
        ann = ""
        if lesion:
            ann = f"{name}.mrk.json"
            write_markups(tmp_path / ann, [centre])
        rows.append([f"P{n}", f"{name}.nrrd", "lesion" if lesion else "healthy", ann])
        x = rng.normal(0.5, 1.5, 6) if lesion else np.full(6, -8.0)   # a healthy volume: no hits, map ≈ 0
        hit = rng.random(6) < TRUE_MAP(x)
        points = [centre if h else centre + 40.0 * (m + 1) for m, h in enumerate(hit)]
        volumes.append((name, tmp_path / f"{name}.nrrd", points, Platt()(x).tolist(), x))
    with (tmp_path / "cohort.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["patient", "volume", "label", "annotation"], *rows])
    det = tmp_path / "det"
    det.mkdir()
    write_detect_folder(det, [v[:4] for v in volumes])
    for name, _, _, _, x in volumes:              # the raw logits Detect writes beside every score
        doc_path = det / f"{name}_candidates.json"
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
        for cand, logit in zip(doc["candidates"], x, strict=True):
            cand["crop_logit"] = float(logit)
        doc_path.write_text(json.dumps({**doc, "volume_logit": float(x.max())}), encoding="utf-8")
    model = tmp_path / "model.safetensors"
    shutil.copy(trained_run(tmp_path_factory) / "model.safetensors", model)
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", str(model), str(det), str(tmp_path / "cohort.csv"), "--out", str(out)]) == 0
    record = read_metadata(out)["calibration"]
    x = np.concatenate([v[4] for v in volumes])
    se = _standard_errors(x, TRUE_MAP)
    assert abs(record["candidate"][0] - TRUE_MAP.a) < 4 * se[0]
    assert abs(record["candidate"][1] - TRUE_MAP.b) < 4 * se[1]
    assert record["volumes"] == 150 and record["lesion_volumes"] == 120 and record["volume"][0] > 0
    assert "calibration" not in read_metadata(model)                   # --out: the input is untouched
    report = json.loads((det / "calibration.json").read_text(encoding="utf-8"))
    assert report["reliability"]["ece"] < report["reliability"]["raw"]["candidate"]["ece"]
    assert (det / "calibration_calibration.png").stat().st_size > 5_000


def _candidates(det) -> dict:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(det.glob("*_candidates.json"))}


def test_detect_applies_the_fitted_maps_and_training_patients_are_refused(tmp_path, tmp_path_factory):
    """Real model end to end: detect a validation fold, calibrate, detect the test patients with
    and without the maps; only the numbers change. Its own training fold is refused by name."""
    run = trained_run(tmp_path_factory)
    data = blob_dataset(tmp_path_factory)
    val, _ = cohort_subset(tmp_path, data, "val.csv", lambda r: r["split"] == "train" and r["fold"] == "0")
    test, _ = cohort_subset(tmp_path, data, "test.csv", lambda r: r["split"] == "test")
    train, trained = cohort_subset(tmp_path, data, "train.csv", lambda r: r["split"] == "train" and r["fold"] == "1")
    for det, cohort in (("val", val), ("test", test), ("train", train)):
        assert main(["detect", str(run), str(cohort), "--out", str(tmp_path / det), "--overlays", "0"]) == 0
    out = tmp_path / "calibrated.safetensors"
    assert main(["calibrate", str(run), str(tmp_path / "val"), str(val), "--out", str(out)]) == 0
    assert main(["detect", str(out), str(test), "--out", str(tmp_path / "test-cal"), "--overlays", "0"]) == 0
    cal = ScoreCalibration.from_metadata(read_metadata(out))
    assert cal.fitted
    raw, new = _candidates(tmp_path / "test"), _candidates(tmp_path / "test-cal")
    assert raw.keys() == new.keys()
    for name, doc in new.items():
        before = raw[name]
        assert [(c["x"], c["y"], c["z"], c["crop_logit"]) for c in doc["candidates"]] == \
            [(c["x"], c["y"], c["z"], c["crop_logit"]) for c in before["candidates"]]
        # Scores are written with 6 decimals, logits with 5: the map's slope bounds the difference.
        tol = cal.candidate.a * 0.25 * 1e-5 + 1e-6
        for c in doc["candidates"]:
            assert c["score"] == pytest.approx(float(cal.candidate(c["crop_logit"])), abs=tol)
        assert doc["volume_logit"] == before["volume_logit"]
        assert doc["volume_score"] == pytest.approx(float(cal.volume(doc["volume_logit"])), abs=1e-6)
        assert doc["calibration"] == read_metadata(out)["calibration"] and before["calibration"] is None
    # The heatmap of a calibrated model is the paper's relative map (maximum 1, or 0 where nothing
    # activates) times the volume's probability, in 256 display levels; '--heatmap relative' keeps
    # the paper's; an uncalibrated model has no probability to scale by, so asking is refused.
    assert main(["detect", str(out), str(test), "--out", str(tmp_path / "relative"), "--overlays", "0",
                 "--heatmap", "relative"]) == 0
    peaks = []
    for name, doc in new.items():
        heat_name = name.replace("_candidates.json", "_heatmap.nrrd")
        scaled, relative = (read_volume(tmp_path / d / heat_name)[0].max() for d in ("test-cal", "relative"))
        assert doc["heatmap_scale"] == pytest.approx(doc["volume_score"], abs=1e-6)
        assert raw[name]["heatmap_scale"] == 1.0 and relative in (0.0, pytest.approx(1.0))
        assert scaled == pytest.approx(relative * doc["volume_score"], abs=0.5 / 255 + 1e-6)
        peaks.append(relative)
    assert max(peaks) == pytest.approx(1.0)
    with pytest.raises(BlcamError, match="is not calibrated") as err:
        detect(run, [test], tmp_path / "refused", DetectSettings(heatmap="probability"), progress=False)
    assert "model.safetensors" in str(err.value)
    weights, original = load_file(str(out)), load_file(str(run / "model.safetensors"))
    assert weights.keys() == original.keys() and all(weights[k].equal(original[k]) for k in original)
    report = tmp_path / "loc.json"
    assert main(["evaluate-detection", str(tmp_path / "test-cal"), str(test), "--out", str(report)]) == 0
    assert "the network's raw sigmoid" in report.with_suffix(".md").read_text(encoding="utf-8")
    with pytest.raises(BlcamError, match="trained") as err:
        calibrate_model(run, tmp_path / "train", train, tmp_path / "leak.safetensors")
    assert trained[0] in str(err.value) and not (tmp_path / "leak.safetensors").exists()
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["calibrate", str(copy), str(tmp_path / "val"), str(val)]) == 0      # in place by default
    assert read_metadata(copy / "model.safetensors")["calibration"]["candidate"] == \
        read_metadata(out)["calibration"]["candidate"]


TINY_FLAGS = ["--arch", "resnet10", "--stem", "paper", "--widen", "0.25", "--epochs", "4", "--batch-size", "8",
              "--lr", "1e-3", "--crop", "8", "32", "32", "--device", "cpu", "--seed", "0", "--workers", "0"]


def test_train_calibrate_fits_on_the_validation_fold_only(tmp_path, tmp_path_factory):
    """``blcam train --fold 0 --calibrate``: the maps come from Detect on fold 0's patients, which
    the run never trained on; without a fold there is no one to calibrate on, refused up front."""
    data = blob_dataset(tmp_path_factory)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--fold", "0", "--calibrate", *TINY_FLAGS]) == 0
    record = read_metadata(run / "model.safetensors")["calibration"]
    _, fold0 = cohort_subset(tmp_path, data, "fold0.csv", lambda r: r["split"] == "train" and r["fold"] == "0")
    with (run / "calibration" / "cohort.csv").open(newline="", encoding="utf-8") as fh:
        assert sorted({r["patient"] for r in csv.DictReader(fh)}) == fold0
    assert record["cohort"] == str((run / "calibration" / "cohort.csv").resolve()) and record["hits"] >= 1
    assert (run / "calibration" / "calibration_calibration.png").is_file()
    assert main(["train", str(data), "--out", str(tmp_path / "nofold"), "--calibrate", *TINY_FLAGS]) == 2
    assert not (tmp_path / "nofold").exists()


def test_train_calibrate_on_a_fold_without_lesions_keeps_the_model_and_says_why(tmp_path, tmp_path_factory, capsys):
    """A fold that cannot be fitted (here: no lesion volume in it) fails the command after
    training, naming both facts: the trained model is there, and what the fit lacked."""
    data = tmp_path / "patches"
    shutil.copytree(blob_dataset(tmp_path_factory), data)
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    lesion_patients = {r["patient"] for r in rows if r["label"] == "1"}
    for r in rows:          # fold 0 keeps only its healthy patients
        if r["split"] == "train" and r["fold"] == "0" and r["patient"] in lesion_patients:
            r["fold"] = "1"
    assert any(r["split"] == "train" and r["fold"] == "0" for r in rows)
    with (data / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--fold", "0", "--calibrate", *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert f"the model in {run} is trained, but its scores could not be calibrated on fold 0" in err
    assert "cannot calibrate the candidate scores: all" in err and "are misses" in err
    assert "calibration" not in read_metadata(run / "model.safetensors")      # left as trained
