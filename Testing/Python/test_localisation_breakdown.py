"""Per-kind and per-size localisation, score calibration, and their place in the reports.

The hand-built cohort is test_localisation's (A: masked lesion, B: centre only, C: healthy;
hit radius 5 mm). Candidates, best first over all volumes, with what they hit:
.95 B (none), .9 A (A), .85 A (A again), .8 A (none), .7 C (none), .3 B (B), .2 C (none).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cam_fixtures import blob_volume, write_detect_folder
from blcam.cli import main
from blcam.errors import BlcamError
from blcam.io.points import write_markups
from blcam.io.volume import write_volume
from blcam.metrics.breakdown import TableLesion, breakdown, match_lesions, read_lesion_table, size_group
from blcam.metrics.calibration import calibration, reliability
from blcam.metrics.localisation import evaluate_localisation, froc
from test_localisation import GEOM, _ball_mask, _cohort, _lps


def _row(volume, centre, kind=None, diameter=None, row=2):
    return TableLesion(volume, np.asarray(centre, float), kind, diameter, row)


def test_group_froc_ignores_other_groups_hits_and_shares_false_positives():
    truths, dets = _cohort()
    # A only: .95 FP (1/3 FP/vol), .9 finds A; B's hit at .3 is neither → 1 from 0.5 FP/volume on.
    assert froc(truths, dets, 5.0, include={(0, 0)})["sensitivity"] == pytest.approx([0, 0, 1, 1, 1, 1, 1])
    # B only: A's hits are neither, so 3 FPs (.95, .8, .7) = 1 FP/volume before B is found at .3.
    # (Counting A's hits as false positives would give 5 FPs and 0 at 1 FP/volume.)
    b = froc(truths, dets, 5.0, include={(1, 0)})
    assert b["sensitivity"] == pytest.approx([0, 0, 0, 1, 1, 1, 1]) and b["lesions"] == 1
    assert froc(truths, dets, 5.0, include=None) == froc(truths, dets, 5.0, include={(0, 0), (1, 0)})


def test_breakdown_by_kind_and_size_with_an_unknown_group():
    truths, dets = _cohort()
    r = evaluate_localisation(truths, dets, hit_mm=5.0)
    a, b = truths[0].centres_lps[0], truths[1].centres_lps[0]
    table = [_row("A", a + [0.5, 0.5, 0.5], "cyst", 12.0), _row("B", b + [0.8, 0, 0], "irregular", 4.0)]
    out = breakdown(truths, dets, r["per_lesion"], table, {"kind", "diameter_mm"}, 5.0)
    assert out["unmatched"] == 0 and list(out["kind"]) == ["cyst", "irregular"]
    cyst, irregular = out["kind"]["cyst"], out["kind"]["irregular"]
    assert (cyst["lesions"], cyst["pointing_game"], irregular["pointing_game"]) == (1, 1.0, 0.0)
    assert cyst["froc_mean_sensitivity"] == pytest.approx(5 / 7)
    assert irregular["froc_mean_sensitivity"] == pytest.approx(4 / 7)
    assert irregular["distance_mm_median"] == pytest.approx(r["per_lesion"][1]["distance_mm"])
    assert list(out["size"]) == ["< 5 mm", "≥ 10 mm"] and out["size"]["≥ 10 mm"] == cyst
    assert r["per_lesion"][0]["kind"] == "cyst" and r["per_lesion"][1]["diameter_mm"] == 4.0

    # B's row 3 mm away is outside its radius (2 mm) → B is 'unknown' in both breakdowns.
    table[1] = _row("B", b + [3.0, 0, 0], "irregular", 4.0)
    out = breakdown(truths, dets, r["per_lesion"], table, {"kind", "diameter_mm"}, 5.0)
    assert out["unmatched"] == 1 and list(out["kind"]) == ["cyst", "unknown"]
    assert list(out["size"]) == ["≥ 10 mm", "unknown"] and out["size"]["unknown"]["pointing_game"] == 0.0
    assert "size" not in breakdown(truths, dets, r["per_lesion"], table, {"kind"}, 5.0)


def test_matching_uses_the_volume_stem_radius_and_one_row_per_lesion():
    truths, _ = _cohort()
    a = truths[0].centres_lps[0]
    truths[0].name = "A.nii.gz"
    rows = [_row("A", a + [0.9, 0, 0]), _row("A", a + [0.2, 0, 0]), _row("B", a)]
    assert match_lesions(truths[:1], rows)[0] == [rows[1]]                       # nearest, same stem
    assert match_lesions(truths[:1], [_row("A", a + [1.5, 0, 0])])[0] == [None]  # no diameter: 1 mm
    assert match_lesions(truths[:1], [_row("A", a + [1.5, 0, 0], diameter=4.0)])[0] != [None]
    assert [size_group(d) for d in (4.99, 5.0, 9.99, 10.0, None)] == ["< 5 mm", "5–10 mm", "5–10 mm",
                                                                       "≥ 10 mm", "unknown"]


def test_calibration_ece_and_brier_by_hand():
    truths, dets = _cohort()
    c = calibration(truths, dets, 5.0)
    # outcomes: .95→0 .9→1 .85→1 .8→0 .7→0 .3→1 .2→0; bins 9 {.95,.9}, 8 {.85,.8}, 7, 3, 2
    assert c["ece"] == pytest.approx((2 * 0.425 + 2 * 0.325 + 0.7 + 0.7 + 0.2) / 7)
    assert c["brier"] == pytest.approx((.95**2 + .1**2 + .15**2 + .8**2 + .7**2 + .7**2 + .2**2) / 7)
    assert [b["count"] for b in c["bins"]] == [0, 0, 1, 1, 0, 0, 0, 1, 2, 2]
    assert c["bins"][9]["mean_score"] == pytest.approx(0.925) and c["bins"][9]["hit_fraction"] == 0.5
    v = c["volume"]                                  # A .9 lesion, B .95 lesion, C .7 healthy
    assert v["ece"] == pytest.approx((2 * 0.075 + 0.7) / 3) and v["brier"] == pytest.approx(0.5025 / 3)
    assert reliability([1.0, 0.0], [1, 0])["bins"][9]["count"] == 1            # 1.0 joins the top bin
    assert np.isnan(reliability([], [])["ece"])
    dets[2].scores = np.array([1.7, 0.2])
    with pytest.raises(BlcamError, match="C: candidate scores must be probabilities"):
        calibration(truths, dets, 5.0)


def test_lesion_table_errors_name_file_and_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("volume,x,y,z,kind,diameter_mm\nA,1,2,3,cyst,4\nB,1,abc,3,oval,5\n", encoding="utf-8")
    with pytest.raises(BlcamError, match=r"bad.csv row 3: y must be a number, got 'abc'"):
        read_lesion_table(bad)
    bad.write_text("volume,x,y,z,diameter_mm\nA,1,2,3,-4\n", encoding="utf-8")
    with pytest.raises(BlcamError, match=r"bad.csv row 2: diameter_mm must be a positive number"):
        read_lesion_table(bad)
    bad.write_text("volume,x,y\nA,1,2\n", encoding="utf-8")
    with pytest.raises(BlcamError, match=r"bad.csv: lesion table lacks the column\(s\) z"):
        read_lesion_table(bad)
    bad.write_text("volume,x,y,z\nA,1,2,3\n", encoding="utf-8")
    rows, columns = read_lesion_table(bad)
    assert columns == set() and rows[0].kind is None and rows[0].diameter_mm is None


def _cli_cohort(tmp_path):
    """Two lesion volumes (v1: cyst hit, v3: small irregular missed) and a healthy one, on disk."""
    vol = blob_volume(GEOM.shape, [(10, 20, 20)], radius_vox=5)
    for name in ("v1", "v2", "v3"):
        write_volume(tmp_path / f"{name}.nrrd", vol, GEOM)
    write_volume(tmp_path / "masks" / "v1.nrrd", _ball_mask((10, 20, 20), 5), GEOM)
    write_markups(tmp_path / "v1.mrk.json", [_lps((10, 20, 20))])
    write_markups(tmp_path / "v3.mrk.json", [_lps((10, 10, 10))])
    (tmp_path / "cohort.csv").write_text("patient,volume,label,annotation\np1,v1.nrrd,lesion,v1.mrk.json\n"
                                         "p2,v2.nrrd,healthy,\np3,v3.nrrd,lesion,v3.mrk.json\n", encoding="utf-8")
    x1, y1, z1 = _lps((10, 20, 20))
    x3, y3, z3 = _lps((10, 10, 10.5))
    (tmp_path / "lesions.csv").write_text(f"volume,lesion,kind,x,y,z,diameter_mm\nv1,1,cyst,{x1},{y1},{z1},12\n"
                                          f"v3,1,irregular,{x3},{y3},{z3},4\n", encoding="utf-8")
    write_detect_folder(tmp_path / "det", [("v1", tmp_path / "v1.nrrd", [_lps((11, 20, 20))], [0.8]),
                                           ("v2", tmp_path / "v2.nrrd", [_lps((3, 3, 3))], [0.4]),
                                           ("v3", tmp_path / "v3.nrrd", [_lps((3, 30, 30))], [0.6])])


def test_evaluate_detection_cli_breakdown_calibration_and_pngs(tmp_path, capsys):
    _cli_cohort(tmp_path)
    out = tmp_path / "loc.json"
    argv = ["evaluate-detection", str(tmp_path / "det"), str(tmp_path / "cohort.csv"), "--masks",
            str(tmp_path / "masks"), "--out", str(out)]
    assert main(argv) == 0                               # lesions.csv beside the cohort is found
    printed = capsys.readouterr().out
    r = json.loads(out.read_text(encoding="utf-8"))
    b = r["breakdown"]
    assert b["unmatched"] == 0 and b["lesion_table"] == str(tmp_path / "lesions.csv")
    assert {k: (g["lesions"], g["pointing_game"]) for k, g in b["kind"].items()} == {"cyst": (1, 1.0),
                                                                                      "irregular": (1, 0.0)}
    assert [b["size"][g]["froc_mean_sensitivity"] for g in ("< 5 mm", "≥ 10 mm")] == [0.0, 1.0]
    cal = r["calibration"]                               # .8 hit, .6 miss, .4 miss
    assert cal["brier"] == pytest.approx((0.2**2 + 0.6**2 + 0.4**2) / 3) and cal["volume"]["n"] == 3
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| irregular | 1 | 0.000 |" in md and "| < 5 mm | 1 |" in md and "ECE" in md
    for suffix in ("_froc.png", "_froc_by_kind.png", "_calibration.png"):
        png = out.with_name("loc" + suffix)
        assert png.stat().st_size > 5_000 and f"wrote {png}" in printed

    # An explicit table without kinds: no by-kind plot (a stale one is removed), no kind breakdown.
    (tmp_path / "sizes.csv").write_text("volume,x,y,z,diameter_mm\n", encoding="utf-8")
    assert main(argv + ["--lesions", str(tmp_path / "sizes.csv")]) == 0
    r = json.loads(out.read_text(encoding="utf-8"))
    assert "kind" not in r["breakdown"] and r["breakdown"]["unmatched"] == 2
    assert not out.with_name("loc_froc_by_kind.png").exists()
    capsys.readouterr()

    (tmp_path / "bad.csv").write_text("volume,x,y,z,diameter_mm\nv1,1,2,3,12\nv3,1,2,three,4\n", encoding="utf-8")
    out.unlink()
    assert main(argv + ["--lesions", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv row 3" in err[0] and "'three'" in err[0]
    assert not out.exists()


def test_demo_report_shows_breakdown_calibration_and_hits_and_misses(tmp_path):
    """The report's new sections, from a localisation result of the hand-built cohort (A hit, B missed)."""
    from blcam.demo import DemoConfig
    from blcam.demo.report import write_report
    from blcam.io.atomic import json_safe, write_json_atomic

    truths, dets = _cohort()
    loc = evaluate_localisation(truths, dets, hit_mm=5.0)
    a, b = truths[0].centres_lps[0], truths[1].centres_lps[0]
    table = [_row("A", a, "cyst", 12.0), _row("B", b, "irregular", 4.0)]
    loc["breakdown"] = breakdown(truths, dets, loc["per_lesion"], table, {"kind", "diameter_mm"}, 5.0)
    loc["calibration"] = calibration(truths, dets, 5.0)
    det = tmp_path / "detections"
    paths = {"evaluation": tmp_path / "evaluation" / "table2.json", "localisation": det / "localisation.json",
             "run": tmp_path / "run", "detections": det}
    write_json_atomic(paths["localisation"], json_safe(loc))
    mode = {"input": "16×32×48", "auc": 0.9, "accuracy": 0.8, "sensitivity": 0.7, "specificity": 0.9}
    write_json_atomic(paths["evaluation"], {"n": 12, "modes": {m: mode for m in ("patch", "centre", "random")}})
    (det / "detections.csv").write_text("name,volume,label,volume_score\n" + "".join(
        f"{n},/data/{n},{'healthy' if n == 'C' else 'lesion'},{d.volume_score}\n"
        for n, d in zip("ABC", dets, strict=True)),
        encoding="utf-8")
    for n in "ABC":
        (det / f"{n}_contact.png").write_bytes(b"png")
    (det / "localisation_calibration.png").write_bytes(b"png")
    write_report(tmp_path, paths, DemoConfig(), {})

    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    for piece in ("## Localisation per lesion kind", "| cyst | 1 | 1.000 |", "| irregular | 1 | 0.000 |",
                  "## Localisation per lesion size (diameter)", "| < 5 mm | 1 |", "## Calibration of the scores",
                  "| candidate score vs hits a lesion | 7 |", "localisation_calibration.png",
                  "**A, all lesions hit: lesion 1 (cyst, 12.0 mm) hit, peak", "**B, a lesion missed: lesion 1 "
                  "(irregular, 4.0 mm) missed, nearest peak 17.7 mm away**", "## Table 2", "## Overlays"):
        assert piece in md, piece
    assert "froc_by_kind" not in md                       # not written, so not shown
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Hits and misses" in page and "detections/B_contact.png" in page and "Calibration of the scores" in page
