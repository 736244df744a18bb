"""``blcam demo``: the whole chain on a very reduced configuration, its report and resuming."""

from __future__ import annotations

import json
import re

import pytest

import blcam.demo.pipeline as demo_pipeline
from blcam.demo import DemoConfig, run_demo
from blcam.demo.report import shown_volumes
from blcam.model import read_metadata

TINY = DemoConfig(patients=8, seed=3, shape=(24, 64, 64), spacing=(1.0, 0.6, 0.6), lesion_fraction=0.5,
                  patch=(20, 48, 48), negatives_per_volume=1, widen=0.25, crop=(16, 32, 32), epochs=1,
                  batch_size=4, device="cpu", jobs=1, overlays=1, calibration_patients=6)


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    index = run_demo(out, TINY, progress=False)
    printed = capsys.readouterr().out
    assert [int(n) for n in re.findall(r"^\[(\d)/9\]", printed, re.M)] == [1, 2, 3, 4, 5, 6, 7, 8, 9]

    page = index.read_text(encoding="utf-8")
    for piece in ("Table 2", "pointing game", "FROC", "curves.png", "table2_roc.png", "localisation_froc.png",
                  "_contact.png"):
        assert piece in page
    for src in re.findall(r"src='([^']+)'", page):
        assert (out / src).is_file(), src                       # every picture the page shows exists
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| pointing game |" in md and "![" in md
    assert f"each snapped onto the darkest blob within {TINY.snap_mm:g} mm" in md    # how Detect placed them
    loc = json.loads((out / "detections" / "localisation.json").read_text(encoding="utf-8"))
    held_out = (out / "held_out_cohort.csv").read_text(encoding="utf-8").splitlines()
    assert loc["volumes"] == len(held_out) - 1 and loc["lesions"] >= 1
    assert 0.0 <= loc["pointing_game"] <= 1.0
    # The phantom's lesions.csv is passed: every annotated lesion matches its row (kind, size).
    assert loc["breakdown"]["unmatched"] == 0 and "unknown" not in loc["breakdown"]["kind"]
    assert sum(g["lesions"] for g in loc["breakdown"]["size"].values()) == loc["lesions"]
    assert loc["calibration"]["volume"]["n"] == loc["volumes"]
    for piece in ("Localisation per lesion kind", "Calibration of the scores", "localisation_calibration.png",
                  "localisation_froc_by_kind.png", "Hits and misses"):
        assert piece in page, piece
    # Score maps fitted on patients set aside (blcam calibrate), or the reason the scores stay raw.
    fit = json.loads((out / "calibration" / "calibration.json").read_text(encoding="utf-8"))
    meta = read_metadata(out / "run" / "model.safetensors")
    if "skipped" in fit:             # one epoch on 8 patients may give no hit to fit on
        assert "calibration was skipped" in md and "calibration" not in meta
    else:
        assert meta["calibration"] == fit["calibration"] and "raw" in loc["calibration"]
        assert "calibrated ('blcam calibrate')" in md
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    assert set(timings) == {"phantom", "export", "train", "evaluate", "calibrate", "detect", "metrics", "pictures",
                            "report"}
    # Pictures only of the volumes the report shows (drawn after Detect), none of calibration's.
    shown = shown_volumes(out / "detections", out / "detections" / "localisation.json")
    assert 1 <= len(shown) <= 9
    drawn = [p.name for p in (out / "detections").glob("*.png") if "_contact" in p.name or "_overlay_" in p.name]
    assert sorted(drawn) == \
        sorted([f"{n}_contact.png" for n in shown] + [f"{n}_overlay_lesion-1.png" for n in shown
                                                      if json.loads((out / "detections" / f"{n}_candidates.json")
                                                                    .read_text(encoding="utf-8"))["candidates"]])
    assert not list((out / "calibration").rglob("*.png"))
    # Held-out AUC on the curves every val_every epochs: the last epoch is always scored.
    history = [json.loads(line) for line in (out / "run" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["val_auc"] is not None

    # A rerun keeps every finished step; a changed setting redoes its step and all later ones.
    run_demo(out, TINY, progress=False)
    assert capsys.readouterr().out.count("done earlier, kept") == 9
    changed = DemoConfig(**{**TINY.__dict__, "top_k": 3})
    run_demo(out, changed, progress=False)
    kept = capsys.readouterr().out
    assert kept.count("done earlier, kept") == 4 and "[6/9] Detect" in kept
    assert max(len(json.loads(p.read_text(encoding="utf-8"))["candidates"])
               for p in (out / "detections").glob("*_candidates.json")) <= 3


def test_an_interrupted_training_continues_from_its_last_epoch(tmp_path, capsys, monkeypatch):
    """A demo stopped during training (Ctrl-C after epoch 1 of 2) keeps that epoch when rerun."""
    config = DemoConfig(**{**TINY.__dict__, "epochs": 2})
    out = tmp_path / "demo"
    real_train = demo_pipeline.train_model

    def interrupted(*args, **kwargs):
        real_train(*args, **kwargs, on_epoch=lambda record: False)   # stops after epoch 1, as a kill would
        raise KeyboardInterrupt
    monkeypatch.setattr(demo_pipeline, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, config, progress=False)
    history = out / "run" / "history.csv"
    first = history.read_text(encoding="utf-8").splitlines()
    assert len(first) == 2                                   # header and epoch 1
    monkeypatch.setattr(demo_pipeline, "train_model", real_train)
    capsys.readouterr()
    run_demo(out, config, progress=False)
    printed = capsys.readouterr().out
    assert "continuing the interrupted training" in printed
    rows = history.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and rows[1] == first[1]            # epoch 1 kept as it was, epoch 2 added
    # Another number of epochs is another run (its schedule differs): it starts afresh.
    run_demo(out, DemoConfig(**{**config.__dict__, "epochs": 1}), progress=False)
    printed = capsys.readouterr().out
    assert "continuing" not in printed
    assert "starting the training afresh" in printed and "2 epochs planned, not 1" in printed
    assert len(history.read_text(encoding="utf-8").splitlines()) == 2
