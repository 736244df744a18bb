"""The lesion-margin option: lesion crops keep their centre inside, healthy crops do not
change, and the option is validated, recorded and reaches the training loop."""

from __future__ import annotations

import numpy as np

import blcam.training.loop as loop
from _training_fixtures import blob_dataset, check_training_option, one_thread, tiny_config  # noqa: F401 (one_thread: autouse)
from blcam.evaluation import evaluate_model
from blcam.model import read_metadata
from blcam.patches.dataset import load_dataset
from blcam.training import TrainConfig, train_model
from blcam.training.point_supervision import lesion_in_crop


def test_lesion_margin_is_a_validated_recorded_option():
    check_training_option("lesion_margin", 0.25, (-0.1, 0.5))
    assert TrainConfig().lesion_margin == 0.0


def test_training_draws_lesion_crops_with_their_centre_inside(tmp_path_factory, tmp_path, monkeypatch):
    data = blob_dataset(tmp_path_factory)
    ds = load_dataset(data)
    cfg = tiny_config(lesion_margin=0.3)
    drawn = []
    real = loop.random_params

    def spy(seed, stream, epoch, indices, patch, crop, flip_p, ranges=None, repeats=None):
        offsets, flips = real(seed, stream, epoch, indices, patch, crop, flip_p, ranges, repeats)
        drawn.append((np.asarray(indices), offsets, flips))
        return offsets, flips

    monkeypatch.setattr(loop, "random_params", spy)
    run = tmp_path / "margin"
    train_model(data, run, cfg, progress=False)
    assert read_metadata(run / "model.safetensors")["training"]["lesion_margin"] == 0.3
    centre = evaluate_model(run, data, split="test", progress=False)["modes"]["centre"]
    assert centre["auc"] >= 0.9, centre

    crop = np.asarray(cfg.crop)
    margin = np.floor(0.3 * crop)
    records, _, _ = loop.split_records(ds, cfg.fold)              # what the loop trains on
    labels = np.array([int(r["label"]) for r in records])
    assert len(drawn) == cfg.epochs and labels.sum() > 0
    healthy_near_face = 0
    for indices, offsets, flips in drawn:
        pos = lesion_in_crop(ds.patch_size, crop, offsets, flips)
        lesion = labels[indices] == 1
        assert (pos[lesion] >= margin).all() and (pos[lesion] <= crop - 1 - margin).all()
        healthy_near_face += int(((pos[~lesion] < margin) | (pos[~lesion] > crop - 1 - margin)).any(axis=1).sum())
    assert healthy_near_face > 0                               # healthy crops still go anywhere
