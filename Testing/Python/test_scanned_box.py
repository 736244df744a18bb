"""Padding planes at a volume's faces are not tissue (blcam.io.padding): Detect maps only the
scanned box, so a volume padded to a larger size (with 0, -1024 or NaN) gives the candidates and
heatmap of the unpadded volume, instead of lighting up the black margin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

import blcam.detect.pipeline as detect_pipeline
from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from blcam.cli import main
from blcam.io.padding import data_box, is_whole, mark_no_data, suspected_mask
from blcam.io.volume import Geometry, write_volume

# (front, back) padding planes per axis (k, j, i): uneven, and one face left unpadded
PADS = ((5, 0), (0, 6), (12, 9))


def _pad(volume: np.ndarray, value, pads=PADS) -> np.ndarray:
    return np.pad(volume, pads, constant_values=value)


@pytest.mark.parametrize("dtype,value", [(np.uint8, 0), (np.float32, -1024.0), (np.float32, np.nan)],
                         ids=["uint8-zero", "float-minus1024", "float-nan"])
def test_data_box_peels_the_constant_planes_off_every_face(dtype, value):
    rng = np.random.default_rng(0)
    core = rng.integers(1, 255, (10, 12, 14)).astype(dtype)
    box = data_box(_pad(core, value))
    assert [(s.start, s.stop) for s in box] == [(5, 15), (0, 12), (12, 26)]
    np.testing.assert_array_equal(_pad(core, value)[box], core)
    assert is_whole(data_box(core), core.shape)                     # nothing padded: the whole volume


def test_data_box_keeps_any_plane_that_holds_one_other_value():
    vol = _pad(np.random.default_rng(1).integers(1, 255, (8, 8, 8)).astype(np.uint8), 0)
    vol[0, 3, 20] = 7               # one voxel of another value, in the first k plane and the first i padding plane
    box = data_box(vol)
    assert box[0].start == 0        # that k plane is data now
    assert (box[2].start, box[2].stop) == (12, 21)        # and the i padding ends before that voxel's plane
    flat = np.full((6, 7, 8), 3.0, np.float32)
    assert is_whole(data_box(flat), flat.shape)           # all constant: nothing to tell apart, keep it
    nan = np.full((4, 5, 6), np.nan, np.float32)
    assert is_whole(data_box(nan), nan.shape)


def test_sub_box_keeps_every_voxel_at_its_lps_position():
    direction = sitk.VersorTransform((0.3, -0.5, 0.8), 0.7).GetMatrix()
    whole = Geometry((30, 20, 10), (0.3, 0.4, 1.1), (5.0, -7.0, 2.0), tuple(direction))
    box = (slice(2, 9), slice(3, 20), slice(10, 25))
    sub = whole.sub_box(box)
    assert sub.shape == (7, 17, 15)
    for kji in [(0, 0, 0), (6, 16, 14), (3.5, 2.25, 7.0)]:
        in_whole = np.asarray(kji) + [s.start for s in box]
        np.testing.assert_allclose(sub.index_to_lps(kji[::-1]), whole.index_to_lps(in_whole[::-1]), atol=1e-9)


def _detect(model, path, out, tmp_path, *extra: str) -> tuple[dict, np.ndarray]:
    assert main(["detect", str(model), str(path), "--out", str(tmp_path / out), "--no-pictures",
                 "--device", "cpu", *extra]) == 0
    doc = json.loads((tmp_path / out / f"{path.name.split('.')[0]}_candidates.json").read_text(encoding="utf-8"))
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / out / f"{path.name.split('.')[0]}_heatmap.nrrd")))
    return doc, heat


def _lps(doc: dict) -> np.ndarray:
    return np.array([[c["x"], c["y"], c["z"]] for c in doc["candidates"]])


@pytest.mark.parametrize("value", [0.0, np.nan], ids=["zero", "nan"])
def test_detect_on_a_padded_volume_finds_what_it_finds_on_the_unpadded_one(tmp_path, value, monkeypatch):
    shape, lesion = (32, 64, 80), (16, 30, 44)
    geometry = Geometry(tuple(reversed(shape)), (0.4, 0.5, 0.45), (3.0, -2.0, 1.5),
                        (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    image = blob_volume(shape, [lesion], radius_vox=5).astype(np.float32)
    write_volume(tmp_path / "plain.nrrd", image, geometry)
    padded = _pad(image, value)
    start = [-before for before, _ in reversed(PADS)]               # (i, j, k) of the padded volume's voxel 0
    padded_geometry = Geometry(tuple(reversed(padded.shape)), geometry.spacing,
                               tuple(geometry.index_to_lps(start)), geometry.direction)
    write_volume(tmp_path / "padded.nrrd", padded, padded_geometry)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))

    plain, plain_heat = _detect(model, tmp_path / "plain.nrrd", "plain", tmp_path)
    assert plain["suspected_mask"] is None
    doc, heat = _detect(model, tmp_path / "padded.nrrd", "padded", tmp_path)
    assert doc["scanned_box_kji"] == [[5, 37], [0, 64], [12, 92]]
    assert doc["suspected_mask"] is None                             # the planes are gone before it looks
    assert plain["scanned_box_kji"] == [[0, 32], [0, 64], [0, 80]]
    assert len(doc["candidates"]) == len(plain["candidates"]) > 0
    np.testing.assert_allclose(_lps(doc), _lps(plain), atol=1e-4)
    np.testing.assert_allclose([c["score"] for c in doc["candidates"]],
                               [c["score"] for c in plain["candidates"]], atol=1e-6)
    inside = tuple(slice(before, n - after) for (before, after), n in zip(PADS, padded.shape, strict=True))
    np.testing.assert_array_equal(heat[inside], plain_heat)          # the same map, where it was scanned
    outside = np.ones(heat.shape, bool)
    outside[inside] = False
    assert not heat[outside].any()                                   # and nothing on the padding
    hit = np.linalg.norm(geometry.lps_to_index(_lps(doc)[0])[::-1] - lesion)
    assert hit <= 8, hit                                             # the top candidate is the lesion

    # The control: mapped with its padding shown black, the darkness detector's top candidate is the margin.
    monkeypatch.setattr(detect_pipeline, "data_box", lambda volume: tuple(slice(0, n) for n in volume.shape))
    monkeypatch.setattr(detect_pipeline, "missing_voxels", lambda volume: None)
    naive, _ = _detect(model, tmp_path / "padded.nrrd", "naive", tmp_path)
    top = padded_geometry.lps_to_index(_lps(naive)[0])[::-1]
    in_margin = any(t < before - 0.5 or t > n - after - 0.5
                    for t, (before, after), n in zip(top, PADS, padded.shape, strict=True))
    assert in_margin, top


def test_detect_shows_nan_voxels_as_nothing_imaged_not_as_black(tmp_path, monkeypatch):
    """A curved mask (no plane: the box keeps it) of NaN voxels at a corner, as a masked export
    writes: no candidate there and no heat, and the lesion stays the top candidate; the control,
    NaN shown as black as before, puts the darkness detector's top candidate at the mask."""
    shape, lesion = (32, 64, 80), (16, 32, 32)       # on a feature of the hand-built detector's grid
    geometry = Geometry(tuple(reversed(shape)), (0.4, 0.4, 0.4), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    image = blob_volume(shape, [lesion], radius_vox=5).astype(np.float32)
    _, j, i = np.indices(shape)
    mask = j < 24 * np.clip((i - 44) / 36, 0, 1) ** 2          # the top corner beyond i = 44, curving down
    image[mask] = np.nan
    write_volume(tmp_path / "masked.nrrd", image, geometry)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))

    doc, heat = _detect(model, tmp_path / "masked.nrrd", "masked", tmp_path)
    assert doc["scanned_box_kji"] == [[0, 32], [0, 64], [0, 80]]
    assert not heat[mask].any()
    voxels = [tuple(int(v) for v in np.round(geometry.lps_to_index(p)[::-1])) for p in _lps(doc)]
    assert voxels and not any(mask[v] for v in voxels)
    assert np.linalg.norm(np.subtract(voxels[0], lesion)) <= 8, voxels[0]

    monkeypatch.setattr(detect_pipeline, "missing_voxels", lambda volume: None)     # NaN → black, as before
    naive, _ = _detect(model, tmp_path / "masked.nrrd", "naive", tmp_path)
    top = geometry.lps_to_index(_lps(naive)[0])[::-1]
    near = np.argwhere(mask)
    assert np.min(np.linalg.norm(near - top, axis=1)) <= 4, top       # at (or in) the mask


def test_mark_no_data_takes_what_reaches_a_face_and_keeps_what_tissue_encloses():
    vol = np.full((12, 14, 16), 120, np.uint8)
    vol[:, :3, :] = 0                       # a margin along one face
    vol[5:8, 6:9, 6:9] = 0                  # an anechoic cyst of the same value, enclosed by tissue
    marked, count = mark_no_data(vol, 0)
    assert count == 12 * 3 * 16 and marked.dtype == np.float32
    assert np.isnan(marked[:, :3, :]).all() and not np.isnan(marked[:, 3:, :]).any()
    assert (marked[5:8, 6:9, 6:9] == 0).all()
    same, none = mark_no_data(vol, 7)       # a value the volume does not hold: the volume itself
    assert same is vol and none == 0


def test_detect_no_data_value_leaves_a_zero_mask_out_but_keeps_a_zero_cyst(tmp_path, capsys):
    """A field of view masked with 0 (curved, so the box keeps it) beside a cyst whose inside is 0
    as well: with ``--no-data-value 0`` the mask gets no heat or candidate and the cyst is the
    top candidate; without it (the control) the darkness detector's top candidate is the mask."""
    shape, lesion = (32, 64, 80), (16, 32, 32)
    geometry = Geometry(tuple(reversed(shape)), (0.4, 0.4, 0.4), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    image = blob_volume(shape, [lesion], radius_vox=5)
    image[np.linalg.norm(np.indices(shape).reshape(3, -1).T - lesion, axis=1).reshape(shape) <= 4] = 0
    _, j, i = np.indices(shape)
    mask = j < 24 * np.clip((i - 44) / 36, 0, 1) ** 2
    image[mask] = 0
    write_volume(tmp_path / "masked.nrrd", image, geometry)
    model = save_test_model(tmp_path / "model.safetensors", dark_blob_model(), crop=(16, 48, 48))

    doc, heat = _detect(model, tmp_path / "masked.nrrd", "masked", tmp_path, "--no-data-value", "0")
    assert "--no-data-value" not in capsys.readouterr().err        # named: nothing to suggest
    assert doc["settings"]["no_data_value"] == 0.0 and doc["suspected_mask"] is None
    assert doc["no_data_voxels"] >= mask.sum()          # the mask (and the corner voxel blob_volume zeroes)
    assert not heat[mask].any()
    voxels = [tuple(int(v) for v in np.round(geometry.lps_to_index(p)[::-1])) for p in _lps(doc)]
    assert voxels and not any(mask[v] for v in voxels)
    assert np.linalg.norm(np.subtract(voxels[0], lesion)) <= 8, voxels[0]

    naive, _ = _detect(model, tmp_path / "masked.nrrd", "naive", tmp_path)
    assert naive["no_data_voxels"] == 0
    # Not named, the mask is at least suspected: a warning says which option would leave it out.
    assert "rerun with --no-data-value 0 " in capsys.readouterr().err
    assert naive["suspected_mask"]["value"] == 0.0 and naive["suspected_mask"]["fraction"] >= 0.01
    top = geometry.lps_to_index(_lps(naive)[0])[::-1]
    assert np.min(np.linalg.norm(np.argwhere(mask) - top, axis=1)) <= 4, top

    assert main(["detect", str(model), str(tmp_path / "masked.nrrd"), "--out", str(tmp_path / "bad"),
                 "--no-data-value", "nan", "--device", "cpu"]) != 0
    assert "--no-data-value must be a finite number" in capsys.readouterr().err


def test_export_reads_the_grey_range_of_the_scanned_box(tmp_path):
    """A volume padded with -1024 planes gets the grey range of its unpadded twin, as in Detect:
    otherwise the padding's value would be the range's low end and wash the tissue out."""
    from _cohort_fixtures import small_cohort, write_cohort_csv
    from blcam.patches.dataset import load_dataset

    base = small_cohort(tmp_path / "cohort", n_healthy=2, n_lesion=2, shape=(8, 20, 20))
    rng = np.random.default_rng(3)
    tissue = rng.normal(100.0, 20.0, (10, 20, 24)).astype(np.float32)
    geometry = Geometry((24, 20, 10), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(tmp_path / "twin.nrrd", tissue, geometry)
    padded = np.pad(tissue, ((0, 0), (0, 0), (30, 30)), constant_values=-1024.0)
    origin = tuple(geometry.index_to_lps((-30, 0, 0)))
    write_volume(tmp_path / "padded.nrrd", padded, Geometry((84, 20, 10), geometry.spacing, origin, geometry.direction))
    rows = [[c if n in (0, 2) or not c else str(base.parent / c) for n, c in enumerate(line.split(","))]
            for line in base.read_text(encoding="utf-8").splitlines()[1:]]
    cohort = write_cohort_csv(tmp_path / "all.csv", [*rows, ("TWIN", str(tmp_path / "twin.nrrd"), "healthy", ""),
                                                     ("PAD", str(tmp_path / "padded.nrrd"), "healthy", "")])
    assert main(["export", str(cohort), "--out", str(tmp_path / "ds"), "--patch", "4", "8", "8"]) == 0
    grey = {r["patient"]: (float(r["grey_low"]), float(r["grey_high"])) for r in load_dataset(tmp_path / "ds").records}
    assert grey["PAD"] == grey["TWIN"]
    assert grey["TWIN"][0] > 0                      # the tissue's own low end, not the padding's -1024


def test_suspected_mask_tells_a_hard_edge_from_a_shadow_fading_out():
    rng = np.random.default_rng(5)
    tissue = rng.normal(120, 20, (16, 40, 40)).clip(1, 255).astype(np.uint8)
    masked = tissue.copy()
    masked[:, :12, :10] = 0                                  # 7.5 % cut away at a corner, a hard edge
    assert suspected_mask(masked) == (0.0, pytest.approx(12 * 10 / 1600))
    # A shadow: darker with depth from j = 20 and towards its axis (i = 20), black where it is
    # deepest, down to the far face; all around its black core the tissue is already dark.
    _, j, i = np.indices(tissue.shape)
    shade = np.clip((j - 20) / 10, 0, 1) * np.clip((8 - np.abs(i - 20)) / 3, 0, 1)
    shadow = tissue * (1 - shade)
    shadow[shade >= 0.95] = 0
    assert (shadow == 0).mean() >= 0.01 and suspected_mask(shadow) is None
    assert suspected_mask(tissue) is None
