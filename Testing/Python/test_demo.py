"""``blcam demo``: the whole chain on a very reduced configuration, its report and resuming."""

from __future__ import annotations

import json
import re

from blcam.demo import DemoConfig, run_demo

TINY = DemoConfig(patients=8, seed=3, shape=(24, 64, 64), spacing=(1.0, 0.6, 0.6), lesion_fraction=0.5,
                  patch=(20, 48, 48), negatives_per_volume=1, widen=0.25, crop=(16, 32, 32), epochs=1,
                  batch_size=4, device="cpu", jobs=1, overlays=1)


def test_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    index = run_demo(out, TINY, progress=False)
    printed = capsys.readouterr().out
    assert [int(n) for n in re.findall(r"^\[(\d)/7\]", printed, re.M)] == [1, 2, 3, 4, 5, 6, 7]

    page = index.read_text(encoding="utf-8")
    for piece in ("Table 2", "pointing game", "FROC", "curves.png", "table2_roc.png", "localisation_froc.png",
                  "_contact.png"):
        assert piece in page
    for src in re.findall(r"src='([^']+)'", page):
        assert (out / src).is_file(), src                       # every picture the page shows exists
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| pointing game |" in md and "![" in md
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
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    assert set(timings) == {"phantom", "export", "train", "evaluate", "detect", "metrics", "report"}

    # A rerun keeps every finished step; a changed setting redoes its step and all later ones.
    run_demo(out, TINY, progress=False)
    assert capsys.readouterr().out.count("done earlier, kept") == 7
    changed = DemoConfig(**{**TINY.__dict__, "top_k": 3})
    run_demo(out, changed, progress=False)
    kept = capsys.readouterr().out
    assert kept.count("done earlier, kept") == 4 and "[5/7] Detect" in kept
    assert max(len(json.loads(p.read_text(encoding="utf-8"))["candidates"])
               for p in (out / "detections").glob("*_candidates.json")) <= 3
