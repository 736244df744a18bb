"""``bench/missed_lesions.py``: what outranked each lesion that Detect's pointing game missed.

Three lesion volumes on disk, with masks and a lesion table in another folder (as for a
held-out cohort CSV), and a look-alike table beside the cohort:
* v1: an oval mass whose volume's best candidate sits on a known fat lobule, its own
  candidate second → missed, cause "look-alike", rank 2;
* v2: an irregular mass with the best candidate just outside its mask → "beside the lesion";
* v3: two lesions, a hit cyst and an oval mass whose place went to a candidate on no known
  structure → "elsewhere" (the candidate on the cyst is that lesion's place, not the blame).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from _cam_fixtures import blob_volume, write_detect_folder
from blcam.io.points import write_markups
from blcam.io.volume import write_volume
from test_localisation import GEOM, _ball_mask, _lps

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import missed_lesions  # noqa: E402


def _write(tmp_path: Path) -> None:
    lesions = {"v1": [((10, 20, 20), "oval", 6.0)], "v2": [((10, 10, 10), "irregular", 3.0)],
               "v3": [((10, 20, 20), "cyst", 6.0), ((10, 30, 8), "oval", 4.0)]}
    table, cohort = ["volume,lesion,kind,x,y,z,diameter_mm"], ["patient,volume,label,annotation"]
    for name, items in lesions.items():
        write_volume(tmp_path / f"{name}.nrrd", blob_volume(GEOM.shape, [c for c, _, _ in items], 3), GEOM)
        mask = sum(_ball_mask(c, r, n + 1) for n, (c, _, r) in enumerate(items))   # r: voxels, ~mm
        write_volume(tmp_path / "truth" / "masks" / f"{name}.nrrd", mask.astype(np.uint8), GEOM)
        write_markups(tmp_path / f"{name}.mrk.json", [_lps(c) for c, _, _ in items])
        cohort.append(f"p{name},{name}.nrrd,lesion,{name}.mrk.json")
        for n, (c, kind, r) in enumerate(items):
            x, y, z = _lps(c)
            table.append(f"{name},{n + 1},{kind},{x},{y},{z},{2 * r}")
    (tmp_path / "cohort.csv").write_text("\n".join(cohort) + "\n", encoding="utf-8")
    (tmp_path / "truth" / "lesions.csv").write_text("\n".join(table) + "\n", encoding="utf-8")
    mx, my, mz = _lps((5, 32, 32))
    (tmp_path / "mimics.csv").write_text(f"volume,kind,x,y,z,diameter_mm\nv1,fat_lobule,{mx},{my},{mz},8\n",
                                         encoding="utf-8")
    write_detect_folder(tmp_path / "det", [
        ("v1", tmp_path / "v1.nrrd", [_lps((5, 33, 32)), _lps((10, 21, 20))], [0.7, 0.6]),
        ("v2", tmp_path / "v2.nrrd", [_lps((10, 10, 19))], [0.5]),
        ("v3", tmp_path / "v3.nrrd", [_lps((10, 20, 21)), _lps((1, 2, 35))], [0.9, 0.4])])


def test_each_miss_is_blamed_on_what_took_its_place(tmp_path, capsys):
    _write(tmp_path)
    out = tmp_path / "missed.json"
    truth = tmp_path / "truth"                 # not beside the cohort: found through the options
    missed_lesions.main([str(tmp_path / "det"), str(tmp_path / "cohort.csv"), "--list", "--json", str(out),
                         "--lesions", str(truth / "lesions.csv"), "--masks", str(truth / "masks")])
    rows = {(r["volume"], r["kind"]): r for r in json.loads(out.read_text(encoding="utf-8"))}
    assert rows[("v3.nrrd", "cyst")]["hit"] and rows[("v3.nrrd", "cyst")]["rank"] == 1
    oval1 = rows[("v1.nrrd", "oval")]
    assert (oval1["hit"], oval1["rank"], oval1["cause"], oval1["look_alike"]) == (False, 2, "look-alike", "fat_lobule")
    assert rows[("v2.nrrd", "irregular")]["cause"] == "beside the lesion"
    oval3 = rows[("v3.nrrd", "oval")]
    assert (oval3["hit"], oval3["rank"], oval3["cause"], oval3["top_score"]) == (False, None, "elsewhere", 0.4)
    printed = capsys.readouterr().out
    assert "| oval | 2 | 0 | 2 | 0 | 1 | 0 | 1 | 1 of 2 |" in printed
    assert "| cyst | 1 | 1 | 0 |" in printed and "outranked by look-alike (fat_lobule) at 0.7" in printed


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (0.5, 0.25, 0.25)])
def test_separability_probe_reads_an_objects_inside_rim_and_shadow_from_its_true_ellipsoid(spacing, monkeypatch):
    """``bench/oval_separability.py``'s oracle features on a drawn ellipsoid: a dark inside
    (40) with a bright rim (200) in tissue of 120, and a brighter band (150) behind it; the
    same in mm on the demo's grid and on a finer one (``--spacing``)."""
    import oval_separability as probe

    from blcam.phantom.shapes import Ellipsoid

    for name in ("SHAPE", "SPACING", "CROP"):          # set_grid changes them; restored after the test
        monkeypatch.setattr(probe, name, getattr(probe, name))
    probe.set_grid(spacing)
    assert probe.SHAPE == tuple(round(f / v) for f, v in zip((24, 48, 80), spacing, strict=True))
    assert probe.CROP == tuple(round(c / v) for c, v in zip((8, 16, 24), spacing, strict=True))
    ell = Ellipsoid(tuple(c / v for c, v in zip((12.0, 20.0, 20.0), spacing, strict=True)), (4.0, 2.5, 6.0), 0.4)
    image = np.full(probe.SHAPE, 120.0, np.float32)
    sl, u, v, dj = probe.rotated_offsets(ell.center_kji, ell.theta, image.shape, (20.0, 20.0, 20.0))
    r = np.sqrt((u / 6.0) ** 2 + (v / 4.0) ** 2 + (dj / 2.5) ** 2)
    lateral = (u / 6.0) ** 2 + (v / 4.0) ** 2
    view = image[sl]
    view[np.broadcast_to((lateral < 1.0) & (dj > 3.0) & (dj < 8.0), view.shape)] = 150.0
    view[np.broadcast_to(r < 1.2, view.shape)] = 200.0
    view[np.broadcast_to(r < 0.8, view.shape)] = 40.0
    f = probe.object_features(image, ell)
    assert f["inside"] == 40.0 and f["inside_std"] == 0.0
    assert 120.0 < f["around"] < 125.0             # the shell 1.4-2 radii also cuts the bright band
    assert f["contrast"] == f["inside"] - f["around"] and f["rim"] > 150.0 and f["rim_contrast"] > 60.0
    assert f["behind"] == 30.0
    crop = probe.crop_at(image, ell.center_kji)
    assert crop.shape == probe.CROP and crop[tuple(n // 2 for n in probe.CROP)] == 40.0
