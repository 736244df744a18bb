"""The appearance augmentation: each change does what it says (blur smooths, a coarser
resolution removes detail along its axis, contrast scales about the mean, gamma bends the grey
curve with its ends fixed), parameters are reproducible and drawn at the asked rate, the
option is validated and recorded, and the training loop applies it and still learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import blcam.training.loop as loop
from _training_fixtures import blob_dataset, check_training_option, one_thread, tiny_config  # noqa: F401 (one_thread: autouse)
from blcam.evaluation import evaluate_model
from blcam.model import read_metadata
from blcam.training import TrainConfig, train_model
from blcam.training.appearance import (
    BLUR_SIGMA,
    CONTRAST,
    GAMMA,
    LOW_RES_FACTOR,
    change_appearance,
    random_appearance,
    with_appearance,
)

NONE = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def _with(**changes) -> np.ndarray:
    row = NONE.copy()
    for name, value in changes.items():
        cols = {"blur": slice(0, 3), "low": slice(3, 6), "contrast": 6, "gamma": 7}[name]
        row[cols] = value
    return row


def test_no_change_is_the_identity_and_values_stay_grey_levels():
    x = torch.randint(0, 256, (16, 32, 48), dtype=torch.uint8)
    assert torch.equal(change_appearance(x, NONE), x.float())
    out = change_appearance(x, np.array([1.0, 0.7, 0.5, 2.0, 1.5, 1.2, 1.25, 0.7]))
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    batch = x[None]
    assert with_appearance(batch, None, slice(0, 1)) is batch      # off: the crops themselves


def test_blur_smooths_but_keeps_the_mean_and_a_flat_crop_flat():
    rng = np.random.default_rng(0)
    along_i = torch.from_numpy(rng.uniform(50, 200, 48).astype(np.float32)).expand(16, 32, 48)
    along_j = torch.from_numpy(rng.uniform(50, 200, 32).astype(np.float32))[None, :, None].expand(16, 32, 48)
    # Smoothed along i only: a pattern along i flattens, a pattern along j is left as it was.
    out = change_appearance(along_i, _with(blur=[0.0, 0.0, 1.0]))
    assert float(out.diff(dim=2).abs().mean()) < 0.5 * float(along_i.diff(dim=2).abs().mean())
    assert torch.allclose(change_appearance(along_j, _with(blur=[0.0, 0.0, 1.0])), along_j, atol=1e-3)
    x = along_i
    # A normalised kernel with replicated edges: the mean moves by far less than one grey level.
    assert float(out.mean()) == pytest.approx(float(x.mean()), abs=0.5)
    flat = torch.full((8, 8, 8), 77.0)
    assert torch.allclose(change_appearance(flat, _with(blur=[1.0, 1.0, 1.0])), flat, atol=1e-3)


def test_a_coarser_resolution_removes_detail_along_its_axis_only():
    stripes = torch.zeros((8, 16, 32))
    stripes[:, :, 1::2] = 200.0                      # alternating along i
    out = change_appearance(stripes, _with(low=[1.0, 1.0, 2.0]))
    # Down-sampled 2× along i (nearest keeps one voxel of each pair), the stripes are gone.
    assert float(out[:, :, 2:-2].std()) < 1.0
    same_axis_j = change_appearance(stripes, _with(low=[1.0, 2.0, 1.0]))
    assert torch.allclose(same_axis_j, stripes, atol=1e-3)         # j had no detail to lose


def test_contrast_scales_about_the_mean_and_gamma_bends_with_fixed_ends():
    x = torch.linspace(100.0, 150.0, 8 * 8 * 8).reshape(8, 8, 8)
    out = change_appearance(x, _with(contrast=1.2))
    assert float(out.mean()) == pytest.approx(float(x.mean()), abs=1e-3)
    assert float(out.std()) == pytest.approx(1.2 * float(x.std()), rel=1e-4)
    ramp = torch.linspace(0.0, 255.0, 512).reshape(8, 8, 8)
    bent = change_appearance(ramp, _with(gamma=1.4))
    assert float(bent.flatten()[0]) == 0.0 and float(bent.flatten()[-1]) == pytest.approx(255.0)
    assert bool((bent.flatten().diff() >= 0).all())                # monotonic: order of greys kept
    assert float(bent.flatten()[256]) < float(ramp.flatten()[256])  # γ > 1 darkens the mid-greys


def test_parameters_are_reproducible_in_range_and_drawn_at_the_asked_rate():
    idx = list(range(2000))
    a = random_appearance(4, 1, idx, 0.3)
    assert np.array_equal(a, random_appearance(4, 1, idx, 0.3))
    assert not np.array_equal(a, random_appearance(4, 2, idx, 0.3))                 # a new epoch
    assert not np.array_equal(a[:5], random_appearance(4, 1, idx[:5], 0.3, [1] * 5))  # a repeat
    blurred, low = a[:, 0] > 0, (a[:, 3:6] > 1).any(axis=1)
    contrast, gamma = a[:, 6] != 1, a[:, 7] != 1
    for applied in (blurred, low, contrast, gamma):
        assert abs(applied.mean() - 0.3) < 0.05                   # 2000 draws: σ ≈ 0.01
    assert BLUR_SIGMA[0] <= a[blurred, :3].min() and a[blurred, :3].max() <= BLUR_SIGMA[1]
    assert LOW_RES_FACTOR[0] <= a[low, 3:6].min() and a[low, 3:6].max() <= LOW_RES_FACTOR[1]
    assert CONTRAST[0] <= a[contrast, 6].min() and a[contrast, 6].max() <= CONTRAST[1]
    assert GAMMA[0] <= a[gamma, 7].min() and a[gamma, 7].max() <= GAMMA[1]
    assert np.array_equal(random_appearance(4, 1, idx[:50], 0.0), np.tile(NONE, (50, 1)))


def test_appearance_is_a_validated_recorded_option_off_by_default():
    check_training_option("appearance", 0.25, (-0.1, 1.5))
    assert TrainConfig().appearance == 0.0


def test_training_changes_every_batch_and_still_learns(tmp_path_factory, tmp_path, monkeypatch):
    data = blob_dataset(tmp_path_factory)
    seen = []
    real = loop.with_appearance

    def spy(crops, params, drawn):
        seen.append(None if params is None else np.asarray(params[drawn]))
        out = real(crops, params, drawn)
        assert out.shape == crops.shape
        return out

    monkeypatch.setattr(loop, "with_appearance", spy)
    run = tmp_path / "appearance"
    train_model(data, run, tiny_config(appearance=0.5), progress=False)
    assert read_metadata(run / "model.safetensors")["training"]["appearance"] == 0.5
    rows = np.concatenate(seen)
    assert all(s is not None for s in seen)
    assert 0.3 < (rows[:, 0] > 0).mean() < 0.7 and 0.3 < (rows[:, 7] != 1).mean() < 0.7
    centre = evaluate_model(run, data, split="test", progress=False)["modes"]["centre"]
    assert centre["auc"] >= 0.9, centre
