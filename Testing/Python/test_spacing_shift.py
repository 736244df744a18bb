"""``bench/spacing_shift.py``: one phantom seed at the demo's 0.5 mm and at another voxel size,
a model's Detect on both, the metrics side by side.

The model is the hand-built darkness detector (:func:`_cam_fixtures.dark_blob_model`), told
it works at 0.5 mm, so Detect resamples the anisotropic volumes to that spacing as it would
for a trained model; two patients keep it to seconds."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from _cam_fixtures import dark_blob_model
from blcam.model import make_metadata, save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import spacing_shift  # noqa: E402


def test_spacing_shift_scores_every_model_on_every_spacing(tmp_path, capsys):
    model = dark_blob_model(spread=True)
    path = tmp_path / "darkness.safetensors"
    save_model(path, model, make_metadata("resnet10", "paper", 0.25, (16, 32, 48), (28, 64, 96),
                                          spacing=[0.5, 0.5, 0.5]))
    out = tmp_path / "shift"
    assert spacing_shift.main([str(path), "--spacing", "0.8", "0.3", "0.4", "--patients", "2", "--seed", "3",
                               "--out", str(out), "--json", str(tmp_path / "rows.json"), "--device", "cpu"]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text(encoding="utf-8"))
    assert [r["phantom"] for r in rows] == ["phantom-0.5x0.5x0.5", "phantom-0.8x0.3x0.4"]
    for r in rows:
        phantom = out / r["phantom"]
        with (phantom / "lesions.csv").open(newline="", encoding="utf-8") as fh:
            lesions = list(csv.DictReader(fh))
        assert r["lesions"] == len(lesions) > 0                      # every lesion of the phantom scored
        assert sum(n for _, n in r["by_kind"].values()) == len(lesions)
        assert 0.0 <= r["pointing"] <= 1.0 and 0.0 <= r["froc"] <= 1.0
    # The second phantom really is the other grid over the same field of view (24 × 48 × 80 mm).
    header = (out / "phantom-0.8x0.3x0.4" / "phantom.json").read_text(encoding="utf-8")
    assert json.loads(header)["shape_kji"] == [30, 160, 200]
    printed = capsys.readouterr().out
    assert "| darkness | phantom-0.8x0.3x0.4 |" in printed and "| darkness | phantom-0.5x0.5x0.5 |" in printed
