"""Hard-negative mining (blcam.training.hard_negatives): what is mined, from whom, and the run that uses it."""

from __future__ import annotations

import numpy as np
import torch

from _training_fixtures import (
    blob_dataset,
    one_thread,  # noqa: F401  (autouse: one torch thread per test)
    tiny_config,
)
from blcam.model import build_model, read_metadata
from blcam.patches.dataset import load_dataset
from blcam.training import train_model
from blcam.training.hard_negatives import mine, mined_manifest, mining_epochs
from blcam.training.loop import split_records


def test_mining_epochs_leave_training_after_each_round():
    assert mining_epochs(40, 0) == []
    assert mining_epochs(40, 1) == [20]
    assert mining_epochs(12, 2) == [4, 8]
    assert mining_epochs(1, 1) == [] and mining_epochs(2, 1) == [1]


def test_mined_negatives_come_only_from_training_patients_healthy_volumes(tmp_path_factory, tmp_path):
    """Fold 0 is held out and the test split too: neither may give a mined patch (no leak)."""
    ds = load_dataset(blob_dataset(tmp_path_factory))
    train, held, _ = split_records(ds, 0)
    torch.manual_seed(0)
    net = build_model("resnet10", "paper", 0.25)
    # min_score 0: every volume gives its candidates, so the patient rule is really exercised.
    recs = mine(net, ds, train, (8, 32, 32), "cpu", tmp_path, 0, per_volume=3, min_score=0.0)
    assert recs and len(recs) <= 3 * len({r["patient"] for r in train if r["patient_class"] == "healthy"})
    allowed = {r["patient"] for r in train if r["patient_class"] == "healthy"}
    forbidden = {r["patient"] for r in held} | {r["patient"] for r in ds.select(split="test")}
    mined_patients = {r["patient"] for r in recs}
    assert mined_patients <= allowed and not mined_patients & forbidden
    assert len(mined_patients) > 1
    folds = {r["patient"]: r["fold"] for r in train}
    for r in recs:
        assert r["label"] == 0 and r["kind"] == "hard_negative" and r["split"] == "train"
        assert r["fold"] == folds[r["patient"]] != 0
        assert r["padded_fraction"] == 0.0                        # inside the volume, like export's negatives
        assert ds.load(r).shape == tuple(ds.patch_size)           # absolute path, readable as a patch
    assert mined_manifest(tmp_path, 0).is_file()
    assert net.training                                           # handed back in training mode


def test_a_run_with_mining_trains_on_the_mined_patches_and_resumes(tmp_path_factory, tmp_path):
    data = blob_dataset(tmp_path_factory)
    cfg = tiny_config(epochs=3, hard_negatives=1, hard_negatives_min_score=0.0)
    out = tmp_path / "run"
    train_model(data, out, cfg, progress=False)
    meta = read_metadata(out / "model.safetensors")
    mined = meta["training"]["hard_negatives_mined"]
    assert mined > 0 and (out / "hard_negatives" / "round0.csv").is_file()
    n_before = len(split_records(load_dataset(data), 0)[0])
    assert meta["training"]["n_train"] == n_before + mined
    # Mined after epoch 2; the best model is picked among the epochs trained after that.
    assert meta["training"]["best_epoch"] > mining_epochs(3, 1)[0]
    # A longer resumed run reloads the mined round instead of mining again.
    stamp = (out / "hard_negatives" / "round0.csv").stat().st_mtime_ns
    train_model(data, out, tiny_config(epochs=4, hard_negatives=1, hard_negatives_min_score=0.0),
                progress=False, resume=True)
    assert (out / "hard_negatives" / "round0.csv").stat().st_mtime_ns == stamp
    assert read_metadata(out / "model.safetensors")["training"]["hard_negatives_mined"] == mined
    assert np.isfinite(read_metadata(out / "model.safetensors")["training"]["best_value"])
