"""Models that work in millimetres (issue 11): resampling, export at a spacing, Detect in the
model's space with the heatmap back on the input's exact grid, and old files unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from _cam_fixtures import dark_blob_model
from blcam.detect import DetectSettings, detect
from blcam.errors import BlcamError
from blcam.io.resample import coarser_axes, grid_at_spacing, mm_to_voxels, resample
from blcam.io.volume import Geometry, write_volume
from blcam.model import make_metadata, model_spacing, save_model

MODEL_SPACING = (0.5, 0.5, 0.5)
# Oblique (15° about the sweep axis k) and flipped (i reversed): the acceptance's hard case.
_C, _S = math.cos(math.radians(15)), math.sin(math.radians(15))
OBLIQUE_FLIPPED = tuple(float(v) for v in (np.array([[_C, -_S, 0], [_S, _C, 0], [0, 0, 1]])
                                           @ np.diag([-1.0, 1.0, 1.0])).ravel())
LESION_LPS = np.array([3.0, -2.0, 1.5])
LESION_RADIUS_MM = 4.5


def _scene(geometry: Geometry, seed: int) -> np.ndarray:
    """The same physical breast on any grid: speckle-like background and one dark ball,
    each voxel drawn from where it lies in LPS (no resampling involved)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(geometry.shape).reshape(3, -1)
    lps = geometry.index_to_lps(np.stack([i, j, k], axis=1).astype(float))
    inside = np.linalg.norm(lps - LESION_LPS, axis=1) <= LESION_RADIUS_MM
    vol = np.clip(rng.normal(128, 20, inside.size), 0, 255)
    vol[inside] = 20 + rng.normal(0, 3, inside.sum())
    vol = vol.reshape(geometry.shape)
    vol[0, 0, 0], vol[-1, -1, -1] = 0, 255
    return np.clip(vol, 0, 255).astype(np.uint8)


def _centred(size_ijk, spacing, direction) -> Geometry:
    """A grid of ``size_ijk`` whose field of view is centred on LPS (0, 0, 0)."""
    half = (np.asarray(size_ijk, float) - 1) / 2 * np.asarray(spacing)
    origin = -np.asarray(direction, float).reshape(3, 3) @ half
    return Geometry(tuple(size_ijk), tuple(spacing), tuple(float(v) for v in origin), tuple(direction))


def test_grid_keeps_the_field_of_view_and_resampling_is_exact_for_linear_fields():
    native = _centred((90, 70, 30), (0.2, 0.073 * 4, 0.476 * 2), OBLIQUE_FLIPPED)
    model = grid_at_spacing(native, MODEL_SPACING)
    assert model.direction == native.direction and model.spacing == MODEL_SPACING
    assert model.size == (36, 41, 57)            # extent / spacing, rounded
    corner = lambda g: g.index_to_lps([-0.5, -0.5, -0.5])   # noqa: E731
    np.testing.assert_allclose(corner(model), corner(native), atol=1e-9)
    assert grid_at_spacing(native, native.spacing) is native
    # A field linear in LPS is reproduced exactly by linear interpolation (inside the grid).
    a, b = np.array([0.7, -1.3, 2.1]), 50.0
    field = lambda g: (g.index_to_lps(np.stack(np.indices(g.size), -1).reshape(-1, 3).astype(float)) @ a + b  # noqa: E731
                       ).reshape(g.size).transpose(2, 1, 0).astype(np.float32)
    out = resample(field(native), native, model, fill=np.nan)
    want = field(model)
    # Inside the hull of the input's voxel centres (ITK holds the edge value in the outer half voxel).
    idx = native.lps_to_index(model.index_to_lps(np.stack(np.indices(model.size), -1).reshape(-1, 3).astype(float)))
    hull = np.all((idx >= 0) & (idx <= np.asarray(native.size) - 1), axis=1).reshape(model.size).transpose(2, 1, 0)
    ok = hull & np.isfinite(out)
    assert ok.mean() > 0.6 and np.isnan(out[~np.isfinite(out)]).all()
    np.testing.assert_allclose(out[ok], want[ok], atol=1e-3 * np.abs(want).max())
    volume = np.full(native.shape, 7, np.uint8)
    assert resample(volume, native, native) is volume
    assert resample(volume, native, model).dtype == np.uint8
    assert mm_to_voxels((14, 20, 56), (0.2, 0.073, 0.476), "--patch-mm") == (29, 274, 280)
    with pytest.raises(BlcamError, match="--patch-mm"):
        mm_to_voxels((14, -1, 56), MODEL_SPACING, "--patch-mm")


def test_detect_in_the_models_space_matches_across_spacings_and_orientations(tmp_path):
    model_path = tmp_path / "model.safetensors"
    save_model(model_path, dark_blob_model(spread=True),
               make_metadata("resnet10", "paper", 0.25, (16, 48, 48), (24, 72, 72), spacing=list(MODEL_SPACING),
                             training={"point_loss": 1.0}))
    inputs = {
        "iso": _centred((96, 96, 48), (0.5, 0.5, 0.5), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
        "abus": _centred((160, 220, 40), (0.3, 0.2, 0.6), OBLIQUE_FLIPPED),
    }
    for n, (name, geometry) in enumerate(inputs.items()):
        write_volume(tmp_path / f"{name}.nrrd", _scene(geometry, n), geometry)
    detect(model_path, [tmp_path / f"{n}.nrrd" for n in inputs], tmp_path / "out",
           DetectSettings(overlays=0, refine=1), progress=False)
    tops = {}
    for name, geometry in inputs.items():
        heat = sitk.ReadImage(str(tmp_path / "out" / f"{name}_heatmap.nrrd"))
        assert heat.GetSize() == geometry.size             # NRRD stores spacing × direction: float round-off
        np.testing.assert_allclose(heat.GetSpacing(), geometry.spacing, rtol=1e-12)
        np.testing.assert_allclose(heat.GetOrigin(), geometry.origin, atol=1e-9)
        np.testing.assert_allclose(heat.GetDirection(), geometry.direction, atol=1e-9)
        arr = sitk.GetArrayViewFromImage(heat)
        assert np.abs(arr * 255 - np.rint(arr * 255)).max() < 1e-3 and 0.9 < arr.max() <= 1.0   # 256 levels
        hottest = np.unravel_index(np.argmax(arr), arr.shape)
        # The heatmap is the feature grid upsampled: hottest within one feature (16 voxels of 0.5 mm).
        assert np.linalg.norm(geometry.index_to_lps(np.asarray(hottest[::-1], float)) - LESION_LPS) <= 8.0
        doc = json.loads((tmp_path / "out" / f"{name}_candidates.json").read_text(encoding="utf-8"))
        assert doc["model_spacing"] == list(MODEL_SPACING)
        top = np.array([doc["candidates"][0][a] for a in "xyz"])
        assert np.linalg.norm(top - LESION_LPS) <= LESION_RADIUS_MM, (name, top)
        # The files' voxel indices are the input's own (Slicer's), not the model grid's.
        ijk = [doc["candidates"][0][a] for a in "ijk"]
        assert np.abs(geometry.lps_to_index(top) - ijk).max() <= 0.5 + 1e-6
        tops[name] = top
    assert np.linalg.norm(tops["iso"] - tops["abus"]) <= 2.0, tops


def test_models_and_exports_from_before_spacings_load_and_behave_as_before(tmp_path):
    meta = make_metadata("resnet10", "paper", 0.25, (16, 48, 48), (24, 72, 72))
    assert meta["spacing"] is None and model_spacing(meta) is None
    old = {k: v for k, v in meta.items() if k != "spacing"}      # a file written before the key existed
    assert model_spacing(old) is None
    from blcam.patches.dataset import PatchDataset
    assert PatchDataset(tmp_path, {"settings": {"patch": [24, 72, 72]}}, []).spacing is None


def test_export_at_a_spacing_records_it_and_training_carries_it_into_the_model(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from _training_fixtures import SUBPROCESS_ENV, tiny_config, write_blob_cohort
    from blcam.model import read_metadata
    from blcam.patches.dataset import load_dataset
    from blcam.training import train_model
    cohort = write_blob_cohort(tmp_path / "cohort", patients=8)      # 0.25 × 0.25 × 0.5 mm voxels
    env = {**os.environ, **SUBPROCESS_ENV,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "BreastLesionCAM")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "blcam", "export", str(cohort), *a],  # noqa: E731
                                    capture_output=True, text=True, encoding="utf-8", env=env)
    done = run("--out", str(tmp_path / "p"), "--spacing", "0.5", "0.5", "0.5", "--patch-mm", "6", "12", "12",
               "--negatives-per-volume", "2", "--folds", "2")
    assert done.returncode == 0, done.stderr
    ds = load_dataset(tmp_path / "p")
    assert ds.spacing == (0.5, 0.5, 0.5) and ds.patch_size == (12, 24, 24)
    les = [r for r in ds.records if r["label"] == 1]
    assert {(r["volume_k"], r["volume_j"], r["volume_i"]) for r in ds.records} == {(20, 40, 40)}
    # The annotated centre is the patch centre on the new grid: the blob is dark there.
    centre = np.asarray(ds.patch_size) // 2
    assert np.mean([ds.load(r)[tuple(centre)] for r in les]) < np.mean([ds.load(r).mean() for r in les])
    bad = run("--out", str(tmp_path / "q"), "--spacing", "native", "--patch-mm", "6", "12", "12")
    assert bad.returncode == 2 and "--patch-mm needs a training spacing" in bad.stderr
    assert not (tmp_path / "q").exists()
    # The default spacing, 'auto', is the cohort's median voxel size: here every volume's own.
    done = run("--out", str(tmp_path / "a"), "--patch-mm", "6", "12", "12", "--negatives-per-volume", "2",
               "--folds", "2")
    assert done.returncode == 0, done.stderr
    auto = load_dataset(tmp_path / "a")
    assert auto.spacing == (0.25, 0.25, 0.5) and auto.patch_size == (12, 48, 48)
    bad = run("--out", str(tmp_path / "q"), "--spacing", "0.5", "0", "0.5")
    assert bad.returncode == 2 and "--spacing" in bad.stderr
    train_model(tmp_path / "p", tmp_path / "run", tiny_config(epochs=1, crop=(8, 16, 16)), progress=False)
    assert read_metadata(tmp_path / "run" / "model.safetensors")["spacing"] == [0.5, 0.5, 0.5]


def test_the_detect_plan_counts_slab_reads_of_the_model_grid():
    from blcam.detect.plan import REFERENCE_IO_S_PER_MVOX, REFERENCE_S_PER_MVOX, plan_detect
    geometry = Geometry((320, 320, 48), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    meta = {"arch": "resnet10", "widen": 0.5, "crop": [16, 160, 160], "patch": [28, 280, 280], "spacing": None}
    plan = plan_detect(meta, geometry)
    # Slabs of 16 slices every 12 (the paper's 28/16): 4 slabs over 48 slices, 1.33 reads a voxel.
    assert plan.model_geometry is geometry and plan.reads_per_voxel == pytest.approx(4 * 16 / 48)
    io = 320 * 320 * 48 / 1e6 * REFERENCE_IO_S_PER_MVOX
    assert plan.expected_seconds() == pytest.approx(io + plan.mvox_read * REFERENCE_S_PER_MVOX["resnet10"] * 0.5)
    coarse = plan_detect({**meta, "spacing": [1.0, 1.0, 1.0]}, geometry)
    assert coarse.model_geometry.shape == (24, 160, 160) and coarse.mvox_read < plan.mvox_read / 4


def test_an_export_from_before_spacings_resumes_and_refuses_another_spacing(tmp_path):
    from _training_fixtures import write_blob_cohort
    from blcam.patches.dataset import load_dataset
    from blcam.patches.export import ExportSettings, export_dataset
    cohort = write_blob_cohort(tmp_path / "cohort", patients=6)
    settings = ExportSettings(patch=(12, 48, 48), negatives_per_volume=1, folds=2, spacing=None)  # as before
    export_dataset(cohort, tmp_path / "p", settings, progress=False)
    meta = tmp_path / "p" / "dataset.json"
    info = json.loads(meta.read_text(encoding="utf-8"))
    del info["settings"]["spacing"]                                   # as written before the option
    meta.write_text(json.dumps(info), encoding="utf-8")
    assert load_dataset(tmp_path / "p").spacing is None
    export_dataset(cohort, tmp_path / "p", settings, progress=False)  # resumes, not "other settings"
    with pytest.raises(BlcamError, match="other settings"):
        export_dataset(cohort, tmp_path / "p", ExportSettings(patch=(12, 48, 48), negatives_per_volume=1, folds=2,
                                                              spacing=(0.25, 0.25, 0.4)), progress=False)
    # Today's default ('auto') records a spacing, so it does not resume an old export silently;
    # the message says how to resume it.
    with pytest.raises(BlcamError, match="only in the spacing.*--spacing native"):
        export_dataset(cohort, tmp_path / "p", ExportSettings(patch=(12, 48, 48), negatives_per_volume=1, folds=2),
                       progress=False)


def test_auto_spacing_cuts_a_one_scanner_cohort_from_its_own_voxels_and_meets_a_mixed_one_at_the_median(tmp_path):
    import filecmp

    from _training_fixtures import write_blob_cohort
    from blcam.io.resample import median_spacing
    from blcam.patches.dataset import load_dataset
    from blcam.patches.export import ExportSettings, export_dataset
    cohort = write_blob_cohort(tmp_path / "cohort", patients=6)      # 0.25 × 0.25 × 0.5 mm voxels
    for name, spacing in (("native", None), ("auto", "auto")):
        export_dataset(cohort, tmp_path / name, ExportSettings(patch=(12, 48, 48), negatives_per_volume=1, folds=2,
                                                               spacing=spacing), progress=False)
    native, auto = load_dataset(tmp_path / "native"), load_dataset(tmp_path / "auto")
    assert native.spacing is None and auto.spacing == (0.25, 0.25, 0.5)
    files = sorted(p.name for p in (tmp_path / "native" / "patches").iterdir())
    assert files and filecmp.cmpfiles(tmp_path / "native" / "patches", tmp_path / "auto" / "patches", files,
                                      shallow=False)[0] == files                 # byte-identical patches
    geometries = [Geometry((8, 8, 8), s, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
                  for s in ((0.2, 0.073, 0.476), (0.2, 0.073, 0.476), (0.3, 0.1, 0.5), (0.25, 0.08, 0.5))]
    assert median_spacing(geometries) == pytest.approx((0.225, 0.0765, 0.488))
    with pytest.raises(BlcamError, match="'auto', 'native'"):
        export_dataset(cohort, tmp_path / "bad", ExportSettings(patch=(12, 48, 48), spacing="median"), progress=False)


def test_mining_cuts_its_negatives_at_the_datasets_spacing(tmp_path):
    from _training_fixtures import tiny_config, write_blob_cohort
    from blcam.patches.dataset import load_dataset
    from blcam.patches.export import ExportSettings, export_dataset
    from blcam.training import train_model
    from blcam.training.hard_negatives import load_mined
    cohort = write_blob_cohort(tmp_path / "cohort", patients=8)      # 20×80×80 voxels of 0.25 × 0.25 × 0.5 mm
    export_dataset(cohort, tmp_path / "p", ExportSettings(patch=(12, 48, 48), negatives_per_volume=2, folds=2,
                                                          spacing=(0.25, 0.25, 0.4)), progress=False)
    train_model(tmp_path / "p", tmp_path / "run", tiny_config(epochs=2, hard_negatives=1, hard_negatives_min_score=0.0),
                progress=False)
    mined = load_mined(tmp_path / "run", 0)
    assert mined and {(r["volume_k"], r["volume_j"], r["volume_i"]) for r in mined} == {(25, 80, 80)}
    ds = load_dataset(tmp_path / "p")
    assert all(ds.load(r).shape == (12, 48, 48) for r in mined)


def test_detect_warns_when_a_volume_is_coarser_than_the_model_and_records_it(tmp_path, capsys):
    assert coarser_axes((0.4, 0.3, 0.8), MODEL_SPACING) == ["k 0.8 mm > 0.5 mm"]
    assert coarser_axes((0.6, 0.073, 0.476), MODEL_SPACING) == []          # within 1.25×, or finer
    model_path = tmp_path / "model.safetensors"
    save_model(model_path, dark_blob_model(spread=True),
               make_metadata("resnet10", "paper", 0.25, (16, 48, 48), (24, 72, 72), spacing=list(MODEL_SPACING)))
    inputs = {"fine": _centred((96, 96, 48), (0.5, 0.5, 0.5), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
              "coarse": _centred((96, 96, 30), (0.5, 0.5, 0.8), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
              "coarse2": _centred((96, 96, 30), (0.5, 0.5, 0.8), (1, 0, 0, 0, 1, 0, 0, 0, 1))}
    for n, (name, geometry) in enumerate(inputs.items()):
        write_volume(tmp_path / f"{name}.nrrd", _scene(geometry, n), geometry)
    detect(model_path, [tmp_path / f"{n}.nrrd" for n in inputs], tmp_path / "out",
           DetectSettings(overlays=0, refine=0), progress=False)
    warned = [line for line in capsys.readouterr().err.splitlines() if "coarser than the model" in line]
    # Once per spacing (a cohort of one scanner gets one line), while every volume's JSON records it.
    assert len(warned) == 1 and "coarse.nrrd" in warned[0] and "k 0.8 mm > 0.5 mm" in warned[0], warned
    for name, expected in (("fine", []), ("coarse", ["k 0.8 mm > 0.5 mm"]), ("coarse2", ["k 0.8 mm > 0.5 mm"])):
        doc = json.loads((tmp_path / "out" / f"{name}_candidates.json").read_text(encoding="utf-8"))
        assert doc["coarser_than_model"] == expected
