"""Shared test data for the training / evaluation / checkpoint tests: an easy blob cohort.

Lesions are dark ellipsoids (hypoechoic, like most breast lesions) in smoothed speckle-like
noise; healthy volumes are noise only. Small enough to export in a second and to train a
narrow ResNet-10 on 8×32×32 crops in seconds on two CPU cores, yet a real task: a model
must learn the blob to separate held-out patients. Results are cached per pytest session
so the three test files share one dataset and one trained run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from blcam.cli import build_parser
from blcam.cli.cmd_train import config_from_args
from blcam.errors import BlcamError
from blcam.io.volume import Geometry, write_volume
from blcam.patches.export import ExportSettings, export_dataset
from blcam.training import TrainConfig
from blcam.training.config import PRE_FIELD_VALUES

SHAPE = (20, 80, 80)                 # k, j, i
PATCH = (12, 48, 48)
CROP = (8, 32, 32)
SETTINGS = ExportSettings(patch=PATCH, negatives_per_volume=3, test_fraction=0.3, folds=3, seed=0)
_CACHE: dict[str, object] = {}
# Subprocesses get one OpenMP thread too: on a shared 2-core machine, spinning OpenMP threads
# of several processes slow each other down 5-15× (measured), while one thread loses < 2×.
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    """Train with one intra-op thread during each test (restored after): see SUBPROCESS_ENV."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check_training_option(field: str, good: float, bad: tuple[float, ...]) -> None:
    """A ``blcam train`` option: parsed from its flag, refused out of range by a message that
    names the flag, and read as its off value from runs recorded before it existed."""
    flag = "--" + field.replace("_", "-")
    args = build_parser("train").parse_args(["train", "patches", "--out", "run", flag, str(good)])
    assert getattr(config_from_args(args), field) == good
    for value in bad:
        with pytest.raises(BlcamError, match=flag):
            TrainConfig(**{field: value})
    old = {k: v for k, v in TrainConfig(**{field: good}).to_dict().items() if k != field}
    assert getattr(TrainConfig.from_dict(old), field) == PRE_FIELD_VALUES[field]


def tiny_config(**overrides) -> TrainConfig:
    """A narrow ResNet-10 on small crops: the recipe's code paths at test scale."""
    base = dict(arch="resnet10", stem="paper", widen=0.25, epochs=4, batch_size=8, lr=1e-3, crop=CROP,
                fold=0, device="cpu", seed=0, workers=0, resident="auto", val_every=1)
    base.update(overrides)
    return TrainConfig(**base)


def _volume(rng: np.random.Generator, centres_kji: list) -> np.ndarray:
    noise = gaussian_filter(rng.rayleigh(1.0, SHAPE), sigma=(0.6, 1.0, 1.0))
    vol = 100.0 * noise / noise.mean()
    kk, jj, ii = np.indices(SHAPE, dtype=float)
    for c in centres_kji:
        r = ((kk - c[0]) / 2.5) ** 2 + ((jj - c[1]) / 6.0) ** 2 + ((ii - c[2]) / 7.0) ** 2
        vol *= 1.0 - 0.7 / (1.0 + np.exp((np.sqrt(r) - 1.0) * 6.0))   # soft-edged dark ellipsoid
    return vol.astype(np.float32)


def write_blob_cohort(root: Path, patients: int = 20, seed: int = 0) -> Path:
    """Half lesion patients (one volume, three lesions), half healthy (one volume); the CSV path."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    geom = Geometry(size=SHAPE[::-1], spacing=(0.25, 0.25, 0.5), origin=(-10.0, 5.0, 2.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    rows = []
    for p in range(patients):
        lesion = p % 2 == 0
        centres = []
        if lesion:
            for i in (16, 40, 64):
                centres.append((int(rng.integers(7, 13)), int(rng.integers(20, 60)), i + int(rng.integers(-3, 4))))
        name = f"P{p:02d}"
        write_volume(root / f"{name}.nrrd", _volume(rng, centres), geom)
        ann = ""
        if lesion:
            ann = f"{name}.csv"
            pts = geom.index_to_lps(np.asarray(centres, float)[:, ::-1])
            with (root / ann).open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["x", "y", "z"])
                w.writerows(pts.tolist())
        rows.append([name, f"{name}.nrrd", "lesion" if lesion else "healthy", ann])
    cohort = root / "cohort.csv"
    with cohort.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "volume", "label", "annotation"])
        w.writerows(rows)
    return cohort


def blob_dataset(tmp_path_factory) -> Path:
    """The exported patch dataset (built once per session)."""
    if "dataset" not in _CACHE:
        base = tmp_path_factory.mktemp("blobs")
        cohort = write_blob_cohort(base / "cohort")
        export_dataset(cohort, base / "patches", SETTINGS, progress=False)
        _CACHE["dataset"] = base / "patches"
    return _CACHE["dataset"]


def trained_run(tmp_path_factory) -> Path:
    """A run folder of :func:`tiny_config`: trained on folds 1-2, best model picked on fold 0, so
    the test split's patients are untouched by training and selection (built once)."""
    if "run" not in _CACHE:
        from blcam.training import train_model
        ds = blob_dataset(tmp_path_factory)
        out = tmp_path_factory.mktemp("run") / "run"
        train_model(ds, out, tiny_config(), progress=False)
        _CACHE["run"] = out
    return _CACHE["run"]


def cohort_subset(tmp_path, data, name: str, keep) -> tuple:
    """The blob cohort's rows of the patients whose patches satisfy ``keep`` (manifest rows)."""
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        patients = {r["patient"] for r in csv.DictReader(fh) if keep(r)}
    cohort = json.loads((data / "dataset.json").read_text(encoding="utf-8"))["cohort"]
    with open(cohort, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["patient"] in patients]
    for r in rows:
        for col in ("volume", "annotation"):
            if r[col]:
                r[col] = str((Path(cohort).parent / r[col]).resolve())
    out = tmp_path / name
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out, sorted(patients)
