"""``blcam pictures``: the pictures drawn afterwards from Detect's files are Detect's own (blcam.detect.redraw)."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from _cohort_fixtures import write_cohort_csv
from blcam.cli import main
from blcam.io.points import write_markups
from blcam.io.volume import Geometry, write_volume

# Rotated and left-handed, anisotropic: the redraw must place candidates through the geometry.
GEOMETRY = Geometry((80, 64, 32), (0.4, 0.3, 0.9), (12.0, -30.5, 7.25), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
LESIONS_KJI = [(16, 32, 48)]


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.int16)


def _cohort(tmp_path):
    write_volume(tmp_path / "case.nrrd", blob_volume((32, 64, 80), LESIONS_KJI, radius_vox=9), GEOMETRY)
    centres = GEOMETRY.index_to_lps(np.asarray(LESIONS_KJI, float)[:, ::-1])
    write_markups(tmp_path / "case.mrk.json", centres)
    return write_cohort_csv(tmp_path / "cohort.csv", [("P1", "case.nrrd", "lesion", "case.mrk.json")])


def test_pictures_after_no_pictures_match_detects_own(tmp_path, capsys):
    cohort = _cohort(tmp_path)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))
    common = ["--refine", "0", "--overlays", "2", "--device", "cpu"]
    assert main(["detect", str(model), str(cohort), "--out", str(tmp_path / "drawn"), *common]) == 0
    assert main(["detect", str(model), str(cohort), "--out", str(tmp_path / "bare"), "--no-pictures", *common]) == 0
    assert not list((tmp_path / "bare").glob("*.png"))
    assert main(["pictures", str(tmp_path / "bare"), str(cohort), "--overlays", "2"]) == 0
    assert "1 volume" in capsys.readouterr().out

    names = sorted(p.name for p in (tmp_path / "drawn").glob("*.png"))
    assert names == ["P1_case_contact.png", "P1_case_overlay_lesion-1.png", "P1_case_overlay_lesion-2.png"]
    assert sorted(p.name for p in (tmp_path / "bare").glob("*.png")) == names
    for name in names:
        want, got = _pixels(tmp_path / "drawn" / name), _pixels(tmp_path / "bare" / name)
        assert want.shape == got.shape, name
        # Detect draws its heatmap in memory, the redraw from the NRRD's 1/255 steps: through the
        # 256-entry colour table at 0.3 weight that moves a pixel by about one grey level (the jet
        # table's steepest channel changes by 4 × 255 / 256 per bin). The circle centre is read
        # back from LPS written to 1e-4 mm. Nothing else may differ: same slices, candidates, dots.
        diff = np.abs(want - got)
        assert diff.max() <= 3 and (diff > 0).mean() < 0.01, name
    # Detect run again on a volume removes the pictures of its earlier run (they no longer
    # match its heatmap), whether it draws new ones or not.
    assert main(["detect", str(model), str(cohort), "--out", str(tmp_path / "drawn"), "--no-pictures", "--force",
                 *common]) == 0
    assert not list((tmp_path / "drawn").glob("*.png"))
    # The candidate's slice and the red dot of the annotated centre are in the picture.
    sheet = _pixels(tmp_path / "bare" / names[0])
    assert ((sheet[..., 0] > 200) & (sheet[..., 1] < 60) & (sheet[..., 2] < 60)).sum() > 5
    # Drawn again with fewer overlays: the earlier ones go, not left beside the new sheet.
    assert main(["pictures", str(tmp_path / "bare"), str(cohort), "--overlays", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "bare").glob("*.png")) == names[:2]


def test_pictures_only_and_errors_name_the_culprit(tmp_path, capsys):
    cohort = _cohort(tmp_path)
    write_volume(tmp_path / "other.nrrd", blob_volume((32, 64, 80), [(16, 20, 20)], radius_vox=9), GEOMETRY)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))
    out = tmp_path / "bare"
    assert main(["detect", str(model), str(cohort), "--out", str(out), "--no-pictures", "--refine", "0",
                 "--device", "cpu"]) == 0
    # --only picks volumes by their detections.csv name; an unknown one is named and nothing drawn.
    assert main(["pictures", str(out), str(cohort), "--only", "P1_nope"]) == 2
    assert "P1_nope" in capsys.readouterr().err and not list(out.glob("*.png"))
    assert main(["pictures", str(out), str(cohort), "--only", "P1_case", "--overlays", "0"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["P1_case_contact.png"]
    # A volume Detect never processed: the missing file is named.
    assert main(["pictures", str(out), str(tmp_path / "other.nrrd")]) == 2
    assert "other_candidates.json" in capsys.readouterr().err
    # A candidates file that is not Detect's: named, not a traceback.
    (out / "P1_case_candidates.json").write_text(json.dumps({"candidates": [{"x": 1}]}), encoding="utf-8")
    assert main(["pictures", str(out), str(cohort)]) == 2
    assert "P1_case_candidates.json" in capsys.readouterr().err
    assert main(["pictures", str(tmp_path / "nowhere"), str(cohort)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_evaluate_detection_draws_and_links_the_volumes_worth_a_look(tmp_path, capsys):
    cohort = _cohort(tmp_path)
    write_volume(tmp_path / "calm.nrrd", blob_volume((32, 64, 80), [], radius_vox=9, seed=4), GEOMETRY)
    with cohort.open("a", encoding="utf-8") as fh:
        fh.write("P2,calm.nrrd,healthy,\n")
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))
    det = tmp_path / "det"
    assert main(["detect", str(model), str(cohort), "--out", str(det), "--no-pictures", "--refine", "0",
                 "--device", "cpu"]) == 0
    assert main(["evaluate-detection", str(det), str(cohort), "--pictures", "1"]) == 0
    assert "2 volume(s) worth a look" in capsys.readouterr().out
    # The lesion volume (hit: the hand-built detector finds its blob) and the healthy one, each drawn once.
    assert sorted(p.name for p in det.glob("*_contact.png")) == ["P1_case_contact.png", "P2_calm_contact.png"]
    md = (det / "localisation.md").read_text(encoding="utf-8")
    assert "## Volumes worth a look" in md and "| pointing game |" in md     # appended, the metrics kept
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 3 and all((det / link).is_file() for link in links)   # highest; hardest negative; all hit
    assert "P1_case, all lesions hit: lesion 1" in md and "healthy volume, highest score" in md
    assert main(["evaluate-detection", str(det), str(cohort), "--pictures", "-1"]) == 2
    assert "--pictures" in capsys.readouterr().err
