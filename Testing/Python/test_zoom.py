"""The zoom augmentation: a magnification about the lesion centre that leaves the centre (and
so the point targets) where it was, draws reproducible factors in range, is validated and
recorded, and reaches the training loop, which still learns the blobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import blcam.training.loop as loop
from _training_fixtures import blob_dataset, check_training_option, one_thread, tiny_config  # noqa: F401 (one_thread: autouse)
from blcam.evaluation import evaluate_model
from blcam.model import read_metadata
from blcam.training import TrainConfig, train_model
from blcam.training.augment import random_zooms, source_positions, zoom_about, zoomed


def _dot(size, at) -> torch.Tensor:
    x = torch.zeros((1, *size))
    x[(0, *at)] = 255.0
    return x


def test_zoom_keeps_the_centre_and_pushes_other_points_away_by_the_factor():
    size, centre = (16, 32, 48), np.array([[8.0, 10.0, 20.0]])
    x = torch.randint(0, 256, (1, *size), dtype=torch.uint8)
    # s = 1: the identity, up to fp32 round trips of the sampling coordinates (about 1e-5 voxel
    # for 48 voxels, times at most 255 grey levels between neighbours: 0.003).
    assert torch.allclose(zoom_about(x, centre, np.array([1.0])), x.float(), rtol=0.0, atol=0.01)
    # A bright voxel 2, 4 and 8 voxels from the centre lands 3, 6 and 12 away at s = 1.5.
    out = zoom_about(_dot(size, (10, 14, 28)), centre, np.array([1.5]))
    assert np.unravel_index(int(out.argmax()), size) == (11, 16, 32)
    # The centre voxel's value stays put exactly (it is its own source).
    x = torch.zeros((1, *size))
    x[0, 8, 10, 20] = 200.0
    assert zoom_about(x, centre, np.array([1.3]))[0, 8, 10, 20] == pytest.approx(200.0, abs=0.01)
    # A magnification only reads inside the crop (no padding), wherever its centre lies, even
    # one given outside the crop (it is clipped in).
    centres = np.array([[0.0, 0.0, 0.0], [15.0, 31.0, 47.0], [-3.0, 40.0, 20.0]])
    for axis, n in zip(source_positions(size, centres, np.array([1.25, 1.1, 1.01])), size, strict=True):
        assert float(axis.min()) >= 0.0 and float(axis.max()) <= n - 1
    assert zoomed(x, centre, None, slice(0, 1)) is x


def test_zoom_factors_are_reproducible_in_range_and_vary():
    a = random_zooms(3, 1, [0, 1, 2, 5] * 50, 0.25)
    assert np.array_equal(a, random_zooms(3, 1, [0, 1, 2, 5] * 50, 0.25))
    assert a.min() >= 1.0 and a.max() <= 1.25 and len(np.unique(a[:4])) == 4
    assert not np.array_equal(a[:4], random_zooms(3, 2, [0, 1, 2, 5], 0.25))        # a new epoch
    assert not np.array_equal(a[:4], random_zooms(3, 1, [0, 1, 2, 5], 0.25, [1, 1, 1, 1]))  # a repeat


def test_zoom_is_a_validated_recorded_option_off_by_default():
    check_training_option("zoom", 0.2, (-0.1, 1.5))
    assert TrainConfig().zoom == 0.0


def test_training_zooms_every_batch_and_still_learns(tmp_path_factory, tmp_path, monkeypatch):
    data = blob_dataset(tmp_path_factory)
    cfg = tiny_config(zoom=0.3)
    seen = []
    real = loop.zoomed

    def spy(crops, centres, scales, drawn):
        seen.append(None if scales is None else np.asarray(scales[drawn]))
        return real(crops, centres, scales, drawn)

    monkeypatch.setattr(loop, "zoomed", spy)
    run = tmp_path / "zoom"
    train_model(data, run, cfg, progress=False)
    assert read_metadata(run / "model.safetensors")["training"]["zoom"] == 0.3
    factors = np.concatenate(seen)
    assert all(s is not None for s in seen) and factors.min() >= 1.0 and factors.max() <= 1.3
    assert factors.std() > 0.05                                    # really random, not one factor
    centre = evaluate_model(run, data, split="test", progress=False)["modes"]["centre"]
    assert centre["auc"] >= 0.9, centre
