"""Snapping candidates onto the dark blob beside them (blcam.detect.snap): a candidate the map left
a few mm off a small planted lesion moves onto its centre, in millimetres whatever the voxels,
and stays put where nothing is darker than its surroundings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from blcam.cli import main
from blcam.detect.snap import snap_to_dark_blob
from blcam.io.volume import Geometry, write_volume


def _speckle_with_ball(shape_kji, spacing_kji, centre_mm, radius_mm, level, seed=0) -> np.ndarray:
    """uint8 speckle (~150 ± 25, smoothed over about a voxel) with a ball of grey ``level`` that
    is round in millimetres, at ``centre_mm`` (k, j, i from the first voxel's centre)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(150, 25, shape_kji)
    mm = np.indices(shape_kji).astype(float) * np.asarray(spacing_kji, float)[:, None, None, None]
    inside = np.linalg.norm(mm - np.asarray(centre_mm, float)[:, None, None, None], axis=0) <= radius_mm
    vol[inside] = level + rng.normal(0, 5, inside.sum())
    return np.clip(vol, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("spacing_kji", [(0.5, 0.5, 0.5), (1.0, 0.4, 0.3)], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("direction", [(1.0, -1.0, 1.0), (-1.0, 0.5, 0.5)], ids=["a", "b"])
def test_snap_moves_an_off_centre_candidate_onto_a_small_dark_lesion(spacing_kji, direction):
    spacing = np.asarray(spacing_kji)
    centre_mm = np.array([12.0, 10.0, 11.0])
    shape = tuple(int(v) for v in np.ceil(24.0 / spacing))
    stored = _speckle_with_ball(shape, spacing, centre_mm, radius_mm=2.2, level=40)   # a 4.4 mm lesion
    offset = 2.6 * np.asarray(direction) / np.linalg.norm(direction)    # just outside it, as the map leaves it
    start = (centre_mm + offset) / spacing
    pos, moved = snap_to_dark_blob(stored, start, spacing, radius_mm=3.0)
    error_mm = np.linalg.norm(pos * spacing - centre_mm)
    assert error_mm <= 0.6 * spacing.max() + 0.3, (pos, error_mm)     # the nearest voxel or its neighbour
    assert moved == pytest.approx(np.linalg.norm((pos - start) * spacing), abs=1e-6)
    assert 0 < moved <= 3.0


def test_snap_stays_where_nothing_is_darker_and_never_moves_beyond_its_radius():
    spacing = np.array([0.5, 0.5, 0.5])
    start = np.array([24.0, 24.0, 24.0])
    pos, moved = snap_to_dark_blob(np.full((48, 48, 48), 128, np.uint8), start, spacing)   # nothing darker
    np.testing.assert_array_equal(pos, start)
    assert moved == 0.0
    # A lesion 6 mm away is out of reach of a 3 mm snap: the radius bounds every move, so a
    # darker neighbour a lesion's width away cannot capture the point.
    far = _speckle_with_ball((48, 48, 48), spacing, (12.0, 12.0, 18.0), 2.0, level=30)
    pos, moved = snap_to_dark_blob(far, start, spacing, radius_mm=3.0)
    assert 0 < moved <= 3.0 and np.linalg.norm((pos - start) * spacing) <= 3.0
    near, _ = snap_to_dark_blob(far, start, spacing, radius_mm=6.5)       # the control: within reach
    assert np.linalg.norm(near * spacing - (12.0, 12.0, 18.0)) <= 0.6
    pos, moved = snap_to_dark_blob(far, start, spacing, radius_mm=0.0)    # 0 turns it off
    np.testing.assert_array_equal(pos, start)
    assert moved == 0.0


def test_detect_snaps_its_candidates_onto_the_lesion_and_records_it(tmp_path):
    """End to end through ``blcam detect``: the hand-built detector answers for its slab's first
    slice, so its candidate lies 7.5 slices (3 mm) from the planted lesion; snapping within 4 mm
    puts it on the lesion's centre, and ``--snap-mm 0`` leaves the map's own peak."""
    shape, lesion = (32, 64, 80), np.array([16.0, 32.0, 48.0])
    geometry = Geometry(tuple(reversed(shape)), (0.4, 0.4, 0.4), (3.0, -2.0, 1.5),
                        (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    write_volume(tmp_path / "case.nrrd", blob_volume(shape, [tuple(lesion.astype(int))], radius_vox=5), geometry)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))

    def top(out: str, *extra: str) -> tuple[np.ndarray, dict, dict]:
        assert main(["detect", str(model), str(tmp_path / "case.nrrd"), "--out", str(tmp_path / out), "--refine", "0",
                     "--no-pictures", "--device", "cpu", *extra]) == 0
        doc = json.loads((tmp_path / out / "case_candidates.json").read_text(encoding="utf-8"))
        first = doc["candidates"][0]
        row = next(csv.DictReader((tmp_path / out / "detections.csv").open()))
        return geometry.lps_to_index([first["x"], first["y"], first["z"]])[::-1], doc, row

    unsnapped, plain_doc, _ = top("plain", "--snap-mm", "0")
    snapped, doc, row = top("snapped", "--snap-mm", "4")
    assert np.linalg.norm((unsnapped - lesion) * 0.4) >= 2.5               # the control: off the lesion's centre
    assert np.linalg.norm((snapped - lesion) * 0.4) <= 0.8, snapped        # on it (5-voxel radius: 2 mm)
    assert doc["settings"]["snap_mm"] == 4.0 and plain_doc["settings"]["snap_mm"] == 0.0
    assert doc["candidates"][0]["score"] == plain_doc["candidates"][0]["score"]   # only the position moves
    assert float(row["snap_seconds"]) >= 0.0


def test_detect_refuses_a_negative_snap_radius(tmp_path, capsys):
    write_volume(tmp_path / "case.nrrd", blob_volume((16, 32, 32), [(8, 16, 16)], radius_vox=4),
                 Geometry((32, 32, 16), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))
    assert main(["detect", str(model), str(tmp_path / "case.nrrd"), "--out", str(tmp_path / "out"),
                 "--snap-mm", "-1", "--device", "cpu"]) != 0
    assert "--snap-mm must be ≥ 0, got -1" in capsys.readouterr().err
