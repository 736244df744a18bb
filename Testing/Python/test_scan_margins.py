"""``bench/scan_margins.py``: one phantom cohort as-is, padded with planes of zeros and masked
along a curve (NaN and 0), Detect on each, the metrics side by side.

The model is the hand-built darkness detector (:func:`_cam_fixtures.dark_blob_model`); two
patients keep it to seconds. Padding planes are peeled off, so that row must equal the
phantom's own to the digit, while the same padding shown black, as Detect did before, must
move what Detect finds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from _cam_fixtures import dark_blob_model
from blcam.model import make_metadata, save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scan_margins  # noqa: E402


def test_scan_margins_scores_each_way_of_padding_the_same_cohort(tmp_path, capsys):
    path = tmp_path / "darkness.safetensors"
    save_model(path, dark_blob_model(spread=True), make_metadata("resnet10", "paper", 0.25, (16, 32, 48),
                                                                 (28, 64, 96)))
    out = tmp_path / "margins"
    assert scan_margins.main([str(path), "--patients", "2", "--seed", "3", "--as-before", "--out", str(out),
                              "--json", str(tmp_path / "rows.json"), "--device", "cpu"]) == 0
    rows = {r["phantom"]: r for r in json.loads((tmp_path / "rows.json").read_text(encoding="utf-8"))}
    assert set(rows) == {"as-is", "planes", "planes (as before)", "curve-nan", "curve-nan (as before)",
                         "curve-zero", "curve-zero (as before)", "curve-zero --no-data-value 0"}
    keys = ("pointing", "distance_mm", "froc", "volume_auc", "lesions")
    assert [rows["planes"][k] for k in keys] == [rows["as-is"][k] for k in keys]
    assert [rows["planes (as before)"][k] for k in keys] != [rows["as-is"][k] for k in keys]
    assert len({r["lesions"] for r in rows.values()}) == 1 and rows["as-is"]["lesions"] > 0
    # the padded masks still cover their lesions: same LPS, 10 more voxels on each lateral side
    for name in ("volumes", "masks"):
        first = sorted((out / "planes" / name).glob("*.nrrd"))[0]
        plain = sitk.ReadImage(str(out / "phantom-0.5x0.5x0.5" / name / first.name))
        padded = sitk.ReadImage(str(first))
        assert padded.GetSize()[0] == plain.GetSize()[0] + 20
        np.testing.assert_allclose(padded.TransformIndexToPhysicalPoint((10, 0, 0)), plain.GetOrigin(), atol=1e-6)
    nan = sitk.GetArrayFromImage(sitk.ReadImage(str(sorted((out / "curve-nan" / "volumes").glob("*.nrrd"))[0])))
    assert np.isnan(nan).any() and np.isnan(nan[:, 0, 0]).all()
    assert "| darkness | curve-zero --no-data-value 0 |" in capsys.readouterr().out
