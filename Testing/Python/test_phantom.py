"""Tests of the synthetic ABUS phantom (``blcam phantom`` and :mod:`blcam.phantom`).

Cohorts use small volumes so the whole file runs in seconds; one test times a full-size
48×320×320 volume. Geometry is always checked through SimpleITK, independently of the
phantom's own conversion code.
"""

from __future__ import annotations

import csv
import filecmp
import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from blcam.cli import main
from blcam.errors import BlcamError
from blcam.io.points import read_points
from blcam.phantom import KINDS, LesionSpec, annotate, envelope, form_bmode, make_cohort, make_volume

SHAPE = (20, 128, 112)
SPACING = (1.0, 0.15, 0.2)
RAYLEIGH_SNR = np.sqrt(np.pi / (4.0 - np.pi))   # 1.913


def _cohort(out: Path, seed=12, jobs=1, patients=6) -> Path:
    return make_cohort(out, patients=patients, seed=seed, jobs=jobs, shape=SHAPE,
                       spacing=SPACING, progress=False)


# Seed 12 gives this 6-patient cohort markups in both LPS and RAS (drawn per volume).
@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return _cohort(tmp_path_factory.mktemp("cohort")).parent


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_same_seed_same_bytes_any_jobs(cohort, tmp_path):
    again = _cohort(tmp_path / "jobs2", jobs=2).parent
    names = _files(cohort)
    assert names == _files(again)
    match, mismatch, errors = filecmp.cmpfiles(cohort, again, names, shallow=False)
    assert not mismatch and not errors


def test_different_seed_differs(cohort, tmp_path):
    other = _cohort(tmp_path / "seed13", seed=13, patients=1).parent
    first = [_rows(folder / "cohort.csv")[0]["volume"] for folder in (cohort, other)]
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))
            for folder, name in zip((cohort, other), first, strict=True))
    assert not np.array_equal(a, b)


def test_cohort_files_and_columns(cohort):
    rows = _rows(cohort / "cohort.csv")
    assert list(rows[0]) == ["patient", "volume", "label", "annotation", "birads"]
    patients = {r["patient"] for r in rows}
    assert len(patients) == 6
    lesion_patients = {r["patient"] for r in rows if r["label"] == "lesion"}
    assert len(lesion_patients) == 3                       # exactly the requested half
    for r in rows:
        assert r["label"] in ("healthy", "lesion")
        assert (r["annotation"] != "") == (r["label"] == "lesion")
        assert r["patient"] in lesion_patients or r["label"] == "healthy"
        assert int(r["birads"]) == 1 if r["label"] == "healthy" else int(r["birads"]) >= 2
        image = sitk.ReadImage(str(cohort / r["volume"]))
        assert image.GetPixelID() == sitk.sitkUInt8
        assert image.GetSize() == tuple(reversed(SHAPE))
        vid = Path(r["volume"]).name.removesuffix(".nrrd")
        mask = sitk.ReadImage(str(cohort / "masks" / f"{vid}.nrrd"))
        for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(mask, attr)() == getattr(image, attr)()
        if r["annotation"]:
            assert (cohort / r["annotation"]).is_file()
    counts = {}
    for r in rows:
        counts[r["patient"]] = counts.get(r["patient"], 0) + 1
    assert set(counts.values()) <= {1, 2}
    meta = json.loads((cohort / "phantom.json").read_text(encoding="utf-8"))
    assert meta["seed"] == 12 and meta["volumes"] == len(rows)


def test_geometry_is_varied(tmp_path):
    out = make_cohort(tmp_path, patients=12, seed=3, shape=(6, 24, 24), spacing=(1, 1, 1),
                      lesion_fraction=0.0, progress=False).parent
    dets, origins, identity = set(), set(), 0
    for path in (out / "volumes").glob("*.nrrd"):
        image = sitk.ReadImage(str(path))
        d = np.asarray(image.GetDirection()).reshape(3, 3)
        identity += bool(np.allclose(d, np.eye(3)))
        dets.add(round(float(np.linalg.det(d))))
        origins.add(image.GetOrigin())
    assert dets == {-1, 1} and 0 < identity < len(list((out / "volumes").glob("*.nrrd")))
    assert any(any(v != 0 for v in o) for o in origins)


def test_masks_match_lesion_table(cohort):
    table = _rows(cohort / "lesions.csv")
    assert table and set(table[0]) >= {"volume", "lesion", "kind", "x", "y", "z", "diameter_mm"}
    by_volume = {}
    for row in table:
        by_volume.setdefault(row["volume"], []).append(row)
    for r in _rows(cohort / "cohort.csv"):
        vid = Path(r["volume"]).name.removesuffix(".nrrd")
        mask_img = sitk.ReadImage(str(cohort / "masks" / f"{vid}.nrrd"))
        mask = sitk.GetArrayFromImage(mask_img)
        rows = by_volume.get(vid, [])
        assert (r["label"] == "lesion") == bool(rows)
        assert set(np.unique(mask)) == {0} | {int(x["lesion"]) for x in rows}
        # lesions lie fully inside the volume: no label on any face
        for axis in range(3):
            assert not mask.take([0, -1], axis=axis).any()
        for row in rows:
            assert row["kind"] in KINDS
            idx = np.argwhere(mask == int(row["lesion"]))
            assert len(idx) == int(row["voxels"])
            centroid_kji = idx.mean(axis=0)
            lps = mask_img.TransformContinuousIndexToPhysicalPoint(
                [float(v) for v in centroid_kji[::-1]])
            assert np.allclose(lps, [float(row[a]) for a in "xyz"], atol=1e-3)


def test_annotations_inside_lesions_lps_and_ras(cohort):
    systems = set()
    for r in _rows(cohort / "cohort.csv"):
        if not r["annotation"]:
            continue
        doc = json.loads((cohort / r["annotation"]).read_text(encoding="utf-8"))
        systems.add(doc["markups"][0]["coordinateSystem"])
        labels = [cp["label"] for cp in doc["markups"][0]["controlPoints"]]
        mask_img = sitk.ReadImage(str(cohort / r["volume"].replace("volumes/", "masks/")))
        mask = sitk.GetArrayFromImage(mask_img)
        points = read_points(cohort / r["annotation"])        # honours RAS / LPS
        assert len(points) == len(labels) == mask.max()
        for label, point in zip(labels, points, strict=True):
            ijk = mask_img.TransformPhysicalPointToContinuousIndex([float(v) for v in point])
            voxel = tuple(int(np.floor(v + 0.5)) for v in reversed(ijk))
            assert mask[voxel] == int(label.split("-")[1])
    assert systems == {"LPS", "RAS"}


def test_speckle_is_rayleigh():
    rng = np.random.default_rng(0)
    env = envelope(rng, np.zeros((24, 128, 128), np.float32), SPACING)
    snr = env.mean() / env.std()
    assert abs(snr - RAYLEIGH_SNR) / RAYLEIGH_SNR < 0.15
    # The full image formation (attenuation, TGC, noise) keeps it at a given depth.
    echo = np.zeros((24, 160, 128), np.float32)
    _, env = form_bmode(rng, echo, np.full_like(echo, 5.0), SPACING, return_envelope=True)
    band = env[:, 60:100]
    snr = (band.mean(axis=(0, 2)) / band.std(axis=(0, 2))).mean()
    assert abs(snr - RAYLEIGH_SNR) / RAYLEIGH_SNR < 0.15


def _posterior_contrast(image, mask, label, spacing=SPACING):
    """(lesion mean, surrounding ring mean, behind-lesion mean, same depth elsewhere mean)."""
    lesion = mask == label
    ks, js, _ = np.nonzero(lesion)
    k0, k1 = ks.min(), ks.max() + 1
    footprint = lesion.any(axis=1)[k0:k1]
    core = ndi.binary_erosion(footprint, iterations=2) if footprint.sum() > 50 else footprint
    far = ~ndi.binary_dilation(footprint, iterations=int(3.0 / spacing[2]))
    j0 = js.max() + int(1.0 / spacing[1])
    slab = image[k0:k1, j0:j0 + int(5.0 / spacing[1])].astype(float).transpose(0, 2, 1)
    ring = ndi.binary_dilation(lesion, iterations=6) & ~ndi.binary_dilation(lesion, iterations=2)
    return image[lesion].mean(), image[ring].mean(), slab[core].mean(), slab[far].mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cyst_dark_with_posterior_enhancement(seed):
    image, mask, lesions = make_volume(np.random.default_rng(seed), (24, 200, 160), SPACING,
                                       lesions=[LesionSpec("cyst", 8.0)], hard_negatives=0,
                                       ribs=False)
    inside, ring, behind, beside = _posterior_contrast(image, mask, lesions[0].id)
    assert inside < ring - 40
    assert behind > beside + 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mass_casts_posterior_shadow(seed):
    image, mask, lesions = make_volume(np.random.default_rng(seed), (24, 200, 160), SPACING,
                                       lesions=[LesionSpec("irregular", 10.0)],
                                       hard_negatives=0, ribs=False)
    inside, ring, behind, beside = _posterior_contrast(image, mask, lesions[0].id)
    assert inside < ring - 30
    assert behind < beside - 15


def test_small_volume_api_and_annotation():
    rng = np.random.default_rng(5)
    image, mask, lesions = make_volume(rng, (24, 96, 96), lesions=["oval", "cyst"])
    assert image.dtype == np.uint8 and mask.dtype == np.uint8 and image.shape == (24, 96, 96)
    assert [les.id for les in lesions] == [1, 2] and set(np.unique(mask)) == {0, 1, 2}
    for les in lesions:
        click = annotate(rng, mask, les, SPACING)
        assert mask[tuple(np.floor(click + 0.5).astype(int))] == les.id
        assert np.linalg.norm((click - les.centroid_kji) * SPACING) < 4.0


def test_full_size_volume_is_fast():
    rng = np.random.default_rng(11)
    make_volume(rng, (8, 64, 64))                 # warm-up (imports, caches)
    start = time.perf_counter()
    image, mask, lesions = make_volume(rng, lesions=2)
    elapsed = time.perf_counter() - start
    assert image.shape == (48, 320, 320)
    assert elapsed < 6.0, f"{elapsed:.1f} s for one 48×320×320 volume"
    for les in lesions:
        assert 4.0 <= les.diameter_mm <= 20.0


def test_cli_writes_cohort(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["phantom", str(out), "--patients", "2", "--shape", "8", "48", "48",
                 "--spacing", "1", "0.4", "0.4", "--seed", "3", "--no-progress"])
    assert code == 0
    assert (out / "cohort.csv").is_file() and "cohort.csv" in capsys.readouterr().out


@pytest.mark.parametrize("option, value, needle", [
    ("--patients", "0", "--patients"),
    ("--jobs", "0", "--jobs"),
    ("--lesion-fraction", "1.5", "--lesion-fraction"),
    ("--seed", "-1", "--seed"),
])
def test_cli_bad_option(tmp_path, capsys, option, value, needle):
    code = main(["phantom", str(tmp_path / "bad"), option, value, "--no-progress"])
    assert code != 0
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_bad_shape_and_spacing_raise(tmp_path):
    with pytest.raises(BlcamError, match="--shape"):
        make_cohort(tmp_path, patients=1, shape=(2, 10, 10), progress=False)
    with pytest.raises(BlcamError, match="--spacing"):
        make_cohort(tmp_path, patients=1, spacing=(1.0, 0.0, 0.2), progress=False)
