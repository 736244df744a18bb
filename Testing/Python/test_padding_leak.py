"""Padding must not leak the label.

A lesion near a volume border gets a patch that reaches past the border and is padded,
while negatives are drawn inside their volumes: a network trained on crops that reach into
the padding learns "padding means lesion". Here the volumes are pure noise, so padding is
the *only* thing that separates the classes: trained the paper's way (``padded_crops``) a
tiny network separates held-out patients well; trained the default way (crops kept inside
the volume) it cannot, because there is nothing else to learn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from _training_fixtures import (
    one_thread,  # noqa: F401 (autouse)
    tiny_config,
)
from blcam.evaluation.patch_classification import evaluate_model
from blcam.io.points import write_markups
from blcam.io.volume import Geometry, write_volume
from blcam.patches.dataset import load_dataset
from blcam.patches.export import ExportSettings, export_dataset
from blcam.training import train_model

SHAPE = (10, 40, 40)
# Near two borders each: every lesion patch (8×24×24) is padded, yet a 6×16×16 crop fits
# inside the volume's part of it (k [1, 8) or [0, 8); j, i [6, 24) or [0, 19)).
CORNERS = [(3, 6, 6), (3, 6, 33), (6, 33, 6), (6, 33, 33)]
SETTINGS = ExportSettings(patch=(8, 24, 24), negatives_per_volume=4, test_fraction=0.35, folds=2, seed=1)


def _noise_cohort(root: Path, patients: int = 32) -> Path:
    rng = np.random.default_rng(5)
    geom = Geometry(size=SHAPE[::-1], spacing=(0.3, 0.3, 0.6), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    rows = []
    for p in range(patients):
        name, lesion = f"N{p:02d}", p % 2 == 0
        write_volume(root / f"{name}.nrrd", rng.normal(100, 12, SHAPE).astype(np.float32), geom)
        ann = ""
        if lesion:
            ann = f"{name}.mrk.json"
            write_markups(root / ann, geom.index_to_lps(np.asarray(CORNERS, float)[:, ::-1]))
        rows.append([name, f"{name}.nrrd", "lesion" if lesion else "healthy", ann])
    cohort = root / "cohort.csv"
    with cohort.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["patient", "volume", "label", "annotation"], *rows])
    return cohort


@pytest.fixture(scope="module")
def noise_patches(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noise")
    (root / "cohort").mkdir()
    export_dataset(_noise_cohort(root / "cohort"), root / "patches", SETTINGS, progress=False)
    return root / "patches"


def _held_out_auc(patches: Path, out: Path, padded_crops: bool) -> dict:
    """Test-split AUC per Table-2 mode; the random crops are drawn as training drew them."""
    config = tiny_config(crop=(6, 16, 16), epochs=8, fold=0, padded_crops=padded_crops)
    train_model(patches, out, config, progress=False)
    modes = evaluate_model(out, patches, "test", device="cpu", progress=False)["modes"]
    return {mode: m["auc"] for mode, m in modes.items()}


def test_crops_inside_the_volume_do_not_learn_the_padding(noise_patches, tmp_path):
    ds = load_dataset(noise_patches)
    lesions = [r for r in ds.records if r["label"] == 1]
    assert lesions and all(r["padded_fraction"] > 0 for r in lesions)
    assert all(r["padded_fraction"] == 0 for r in ds.records if r["label"] == 0)
    leaky = _held_out_auc(noise_patches, tmp_path / "paper", padded_crops=True)
    clean = _held_out_auc(noise_patches, tmp_path / "default", padded_crops=False)
    # Without this power the test would prove nothing: padding alone is learnable here.
    assert leaky["patch"] >= 0.95 and leaky["random"] >= 0.8, leaky
    # Default training sees no padding, so on its own crops it has nothing to go on.
    assert abs(clean["random"] - 0.5) <= 0.2, clean
