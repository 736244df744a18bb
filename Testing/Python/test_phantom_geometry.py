"""Phantom geometry options: a fixed (oblique, flipped) direction and the ``--preset``s.

A real ABUS volume is not aligned with the patient axes, and its voxels are 0.2 × 0.073 ×
0.476 mm: code that assumes an identity (or a 90°) direction, or mixes up the axis order
of shapes and spacings, is wrong on it without any error. These tests write small volumes
with the ABUS direction and distinct spacings per axis and check every LPS point the
phantom writes through SimpleITK, independently of the phantom's own conversion code.
The ABUS-size preset is checked by its parameters only (one volume takes ~25 s and ~4 GB).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import blcam.phantom
from _phantom_fingerprint import fingerprint, mismatches, stored
from blcam.cli import main
from blcam.cli.cmd_phantom import PRESET_NAMES
from blcam.errors import BlcamError
from blcam.phantom import ABUS_DIRECTION, PRESETS, make_cohort
from blcam.phantom.geometry import check_direction
from blcam.phantom.presets import resolve

ROOT = Path(__file__).resolve().parents[2]
SMALL = (24, 48, 64)                 # k j i
SMALL_SPACING = (0.9, 0.35, 0.5)     # distinct per axis, so an axis mix-up shows
SEED = 4                             # gives markups in both LPS and RAS, 7 lesions
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def oblique(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("oblique")
    make_cohort(out, patients=4, seed=SEED, shape=SMALL, spacing=SMALL_SPACING,
                lesion_fraction=1.0, direction=ABUS_DIRECTION, progress=False)
    return out


def _geometry(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


# -- (a) an oblique, flipped cohort ------------------------------------------------------
def test_volumes_and_masks_carry_the_given_direction(oblique):
    rows = _rows(oblique / "cohort.csv")
    assert rows
    for r in rows:
        image = sitk.ReadImage(str(oblique / r["volume"]))
        mask = sitk.ReadImage(str(oblique / r["volume"].replace("volumes/", "masks/")))
        assert _geometry(mask) == _geometry(image)
        assert image.GetSize() == tuple(reversed(SMALL))
        assert np.allclose(image.GetSpacing(), tuple(reversed(SMALL_SPACING)), atol=1e-12)
        assert np.allclose(image.GetDirection(), ABUS_DIRECTION, atol=1e-12)
    meta = json.loads((oblique / "phantom.json").read_text(encoding="utf-8"))
    assert np.allclose(meta["direction"], ABUS_DIRECTION, atol=0)


def test_lesion_points_follow_the_direction(oblique):
    """lesions.csv's LPS point is the mask centroid mapped through the read-back geometry,
    lies in its lesion, and is not what an identity direction would give."""
    table = _rows(oblique / "lesions.csv")
    assert len(table) >= 5
    off_identity = 0
    for row in table:
        mask_img = sitk.ReadImage(str(oblique / "masks" / f"{row['volume']}.nrrd"))
        mask = sitk.GetArrayFromImage(mask_img)
        label = int(row["lesion"])
        idx = np.argwhere(mask == label)
        assert len(idx) == int(row["voxels"]) > 0
        centroid_ijk = [float(v) for v in idx.mean(axis=0)[::-1]]
        assert np.allclose(centroid_ijk, [float(row[a]) for a in "ijk"], atol=1e-3)
        lps = np.array([float(row[a]) for a in "xyz"])
        assert np.allclose(mask_img.TransformContinuousIndexToPhysicalPoint(centroid_ijk), lps,
                           atol=1e-3)
        back = mask_img.TransformPhysicalPointToContinuousIndex(lps.tolist())
        voxel = tuple(int(np.floor(v + 0.5)) for v in reversed(back))
        assert mask[voxel] == label, f"{row['volume']} lesion {label}: LPS point outside it"
        naive = np.asarray(mask_img.GetOrigin()) + np.asarray(centroid_ijk) * mask_img.GetSpacing()
        off_identity += np.linalg.norm(naive - lps) > 1.0
    assert off_identity == len(table)


def test_mimic_points_lie_in_their_volume(oblique):
    mimics = _rows(oblique / "mimics.csv")
    assert mimics
    for row in mimics:
        image = sitk.ReadImage(str(oblique / "volumes" / f"{row['volume']}.nrrd"))
        ijk = image.TransformPhysicalPointToContinuousIndex([float(row[a]) for a in "xyz"])
        assert all(-0.5 <= v <= s - 0.5 for v, s in zip(ijk, image.GetSize(), strict=True)), row


def test_annotations_agree_with_lesion_table(oblique):
    """Each clicked centre (RAS ones converted here, not by the project's reader) is inside
    its lesion and near that lesion's recorded centroid."""
    table = {(r["volume"], int(r["lesion"])): r for r in _rows(oblique / "lesions.csv")}
    systems, seen = set(), set()
    for r in _rows(oblique / "cohort.csv"):
        if not r["annotation"]:
            continue
        vid = Path(r["volume"]).name.removesuffix(".nrrd")
        markup = json.loads((oblique / r["annotation"]).read_text(encoding="utf-8"))["markups"][0]
        systems.add(markup["coordinateSystem"])
        flip = RAS_TO_LPS if markup["coordinateSystem"] == "RAS" else np.ones(3)
        mask_img = sitk.ReadImage(str(oblique / "masks" / f"{vid}.nrrd"))
        mask = sitk.GetArrayFromImage(mask_img)
        for cp in markup["controlPoints"]:
            label = int(cp["label"].split("-")[1])
            lps = np.asarray(cp["position"], float) * flip
            ijk = mask_img.TransformPhysicalPointToContinuousIndex(lps.tolist())
            assert mask[tuple(int(np.floor(v + 0.5)) for v in reversed(ijk))] == label
            row = table[(vid, label)]
            assert np.linalg.norm(lps - [float(row[a]) for a in "xyz"]) < 4.0
            seen.add((vid, label))
    assert systems == {"LPS", "RAS"}
    assert seen == set(table)


def test_a_given_direction_changes_geometry_only(oblique, tmp_path):
    """Same seed, default geometry: the same voxels, masks and lesion indices."""
    make_cohort(tmp_path, patients=4, seed=SEED, shape=SMALL, spacing=SMALL_SPACING,
                lesion_fraction=1.0, progress=False)
    assert (tmp_path / "cohort.csv").read_bytes() == (oblique / "cohort.csv").read_bytes()
    for r in _rows(oblique / "cohort.csv"):
        for folder in ("volumes", "masks"):
            path = r["volume"].replace("volumes/", f"{folder}/")
            a, b = (sitk.ReadImage(str(root / path)) for root in (oblique, tmp_path))
            assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    ijk = [[r[a] for a in ("volume", "lesion", "i", "j", "k")] for r in _rows(oblique / "lesions.csv")]
    assert ijk == [[r[a] for a in ("volume", "lesion", "i", "j", "k")]
                   for r in _rows(tmp_path / "lesions.csv")]


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_abus_direction_round_trips_through_files(tmp_path, suffix):
    """A left-handed (det −1) oblique direction survives ITK's writers and readers."""
    abus = PRESETS["abus"]
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))
    image.SetSpacing(tuple(reversed(abus.spacing)))
    image.SetOrigin((-12.5, 40.25, 7.0))
    image.SetDirection(abus.direction)
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"), True)
    back = sitk.ReadImage(str(tmp_path / f"v{suffix}"))
    assert np.allclose(back.GetDirection(), abus.direction, atol=1e-12)
    assert np.allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-12)
    assert np.allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-12)


# -- (b) the presets ---------------------------------------------------------------------
def test_abus_preset_parameters():
    abus = PRESETS["abus"]
    assert abus.shape == (354, 682, 865)              # k j i; SimpleITK size 865 682 354
    assert abus.spacing == (0.476, 0.073, 0.2)
    d = np.asarray(abus.direction).reshape(3, 3)
    assert np.allclose(d @ d.T, np.eye(3), atol=1e-12)            # orthonormal
    assert np.isclose(np.linalg.det(d), -1.0)                       # flipped
    assert np.any((np.abs(d) > 0.05) & (np.abs(d) < 0.95))          # oblique, not a 90° turn
    assert check_direction(abus.direction) == abus.direction
    demo = PRESETS["demo"]
    assert (demo.shape, demo.spacing, demo.direction) == ((48, 320, 320), (1.0, 0.15, 0.2), None)
    assert set(PRESET_NAMES) == set(PRESETS)


def _captured(monkeypatch, argv) -> dict:
    """The arguments ``blcam phantom`` passes to make_cohort (nothing is generated)."""
    seen = {}

    def fake(out, **kwargs):
        seen.update(kwargs)
        return Path(out) / "cohort.csv"
    monkeypatch.setattr(blcam.phantom, "make_cohort", fake)
    assert main(["phantom", "OUT", "--no-progress", *argv]) == 0
    return seen


def test_cli_preset_and_overrides(monkeypatch):
    abus = PRESETS["abus"]
    got = _captured(monkeypatch, ["--preset", "abus"])
    assert (got["shape"], got["spacing"], got["direction"]) == (abus.shape, abus.spacing, abus.direction)
    got = _captured(monkeypatch, ["--preset", "abus", "--shape", *map(str, SMALL)])
    assert (got["shape"], got["spacing"], got["direction"]) == (SMALL, abus.spacing, abus.direction)
    got = _captured(monkeypatch, ["--preset", "abus", "--spacing", "1", "0.5", "0.25"])
    assert (got["shape"], got["spacing"]) == (abus.shape, (1.0, 0.5, 0.25))
    flip = ["-1", "0", "0", "0", "1", "0", "0", "0", "1"]
    got = _captured(monkeypatch, ["--preset", "abus", "--direction", *flip])
    assert got["direction"] == tuple(float(v) for v in flip) and got["shape"] == abus.shape
    got = _captured(monkeypatch, [])
    assert (got["shape"], got["spacing"], got["direction"]) == ((48, 320, 320), (1.0, 0.15, 0.2), None)


def test_resolve_refuses_an_unknown_preset():
    with pytest.raises(BlcamError, match="--preset huge"):
        resolve("huge")


# -- (c) the default output is unchanged -------------------------------------------------
# Fingerprints of the output of the code before --direction/--preset existed (checked equal,
# byte for byte, to the current code's on the machine that stored them). Only a change of the
# phantom or of numpy's random streams or scipy's filters may change them; the B-mode voxels
# are compared within float32 rounding, which differs between CPUs (_phantom_fingerprint.py).


def _assert_unchanged(folder: Path, name: str) -> None:
    problems = mismatches(fingerprint(folder), stored(name))
    assert not problems, "; ".join(problems)


def test_default_cli_output_is_unchanged(tmp_path):
    assert main(["phantom", str(tmp_path), "--patients", "1", "--no-progress"]) == 0
    _assert_unchanged(tmp_path, "default_cli")


def test_default_direction_output_is_unchanged(tmp_path):
    make_cohort(tmp_path, patients=3, seed=5, shape=(8, 48, 48), spacing=(1, 0.4, 0.4),
                progress=False, direction=None)
    assert "direction" not in json.loads((tmp_path / "phantom.json").read_text(encoding="utf-8"))
    _assert_unchanged(tmp_path, "small_no_direction")


def test_fingerprint_tolerates_rounding_flips_but_not_a_changed_image(tmp_path):
    """The control: one-level flips in a few voxels pass, a brighter block fails."""
    make_cohort(tmp_path, patients=1, seed=5, shape=(8, 48, 48), spacing=(1, 0.4, 0.4), progress=False)
    before = fingerprint(tmp_path)
    path = next((tmp_path / "volumes").glob("*.nrrd"))
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    flipped = arr.copy()
    flipped.reshape(-1)[::5000] ^= 1                 # ~4 voxels in 18 000, one grey level each

    def write(voxels: np.ndarray) -> dict:
        out = sitk.GetImageFromArray(voxels)
        out.CopyInformation(img)
        sitk.WriteImage(out, str(path), True)
        return fingerprint(tmp_path)
    assert mismatches(write(flipped), before) == []
    brighter = arr.copy()
    brighter[:4, :16, :16] = np.minimum(brighter[:4, :16, :16].astype(int) + 2, 255)
    assert any("block means differ" in m for m in mismatches(write(brighter), before))


# -- (d) a bad --direction ---------------------------------------------------------------
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "BreastLesionCAM"),
                                                    os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("values, needle", [
    (["1", "0", "0", "0", "1", "0", "0", "0", "2"], "--direction 1 0 0 0 1 0 0 0 2: not orthonormal"),
    (["1", "0.1", "0", "0", "1", "0", "0", "0", "1"], "--direction 1 0.1 0 0 1 0 0 0 1: not orthonormal"),
    (["1", "0", "0", "0", "1", "0", "0", "0", "nan"], "need 9 finite numbers"),
])
def test_bad_direction_is_one_clear_line(tmp_path, values, needle):
    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "blcam", "phantom", str(out), "--patients", "1",
                           "--shape", "8", "48", "48", "--direction", *values, "--no-progress"],
                          capture_output=True, text=True, encoding="utf-8", env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_direction_needs_nine_numbers(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "blcam", "phantom", str(tmp_path / "x"),
                           "--direction", "1", "0", "0"], capture_output=True, text=True,
                          encoding="utf-8", env=ENV, timeout=120)
    assert proc.returncode != 0 and "--direction" in proc.stderr


def test_library_refuses_a_bad_direction(tmp_path):
    with pytest.raises(BlcamError, match="not orthonormal"):
        make_cohort(tmp_path / "x", patients=1, direction=[2, 0, 0, 0, 1, 0, 0, 0, 1],
                    progress=False)
    with pytest.raises(BlcamError, match="9 finite numbers"):
        make_cohort(tmp_path / "x", patients=1, direction=[1, 0, 0, 0, 1, 0, 0, 0],
                    progress=False)
    assert not (tmp_path / "x").exists()
