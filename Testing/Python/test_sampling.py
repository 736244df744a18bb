"""Class-balanced epochs (:mod:`blcam.training.sampling`): the share, the repeats, DDP shards."""

from __future__ import annotations

import numpy as np
import pytest

from blcam.training.data import random_params
from blcam.training.sampling import epoch_order, repeat_numbers

LABELS = [1] * 6 + [0] * 40          # the shape of a real export: few lesion patches


def test_balanced_epoch_keeps_its_length_and_draws_the_asked_share():
    rows, repeats = epoch_order(LABELS, epoch=3, seed=0, rank=0, world_size=1, positive_fraction=0.5)
    labels = np.asarray(LABELS)[rows]
    assert len(rows) == len(LABELS) and labels.sum() == 23
    # Each lesion patch drawn 3 or 4 times (whole passes), no healthy patch twice.
    counts = np.bincount(rows[labels == 1], minlength=6)[:6]
    assert counts.min() >= 3 and counts.max() <= 4
    assert len(set(rows[labels == 0].tolist())) == 23
    assert sorted(repeats[rows == rows[labels == 1][0]].tolist()) == list(range(counts[rows[labels == 1][0]]))
    # A different subset of healthy patches every epoch; the same one for the same epoch.
    again, _ = epoch_order(LABELS, 3, 0, 0, 1, 0.5)
    other, _ = epoch_order(LABELS, 4, 0, 0, 1, 0.5)
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)


def test_repeats_of_a_patch_get_their_own_crops_and_the_first_keeps_the_old_one():
    order = np.array([5, 5, 5, 2])
    repeats = repeat_numbers(order)
    assert repeats.tolist() == [0, 1, 2, 0]
    offsets, flips = random_params(0, 1, 1, order, (28, 64, 96), (16, 32, 48), 0.5, None, repeats)
    assert len({tuple(o) + tuple(f) for o, f in zip(offsets, flips, strict=True)}) >= 2
    first, _ = random_params(0, 1, 1, [5], (28, 64, 96), (16, 32, 48), 0.5)
    assert np.array_equal(first[0], offsets[0])


def test_ranks_split_one_global_order_as_distributed_sampler_does():
    for fraction in (None, 0.5):
        shards = [epoch_order(LABELS, 2, 7, r, 3, fraction) for r in range(3)]
        assert len({len(rows) for rows, _ in shards}) == 1
        merged = np.stack([rows for rows, _ in shards], axis=1).reshape(-1)[:len(LABELS)]
        single, _ = epoch_order(LABELS, 2, 7, 0, 1, fraction)
        assert np.array_equal(merged, single)
        if fraction is None:
            assert sorted(single.tolist()) == list(range(len(LABELS)))   # every patch once (the paper)


@pytest.mark.parametrize("labels", [[1] * 3 + [0] * 2, [0] * 5])
def test_too_few_of_a_class_still_fills_the_epoch(labels):
    rows, _ = epoch_order(labels, 1, 0, 0, 1, 0.2)
    assert len(rows) == len(labels) and set(rows.tolist()) <= set(range(len(labels)))
    if sum(labels) == 0:
        assert sorted(rows.tolist()) == list(range(5))


def test_a_balanced_cosine_run_stopped_and_resumed_equals_one_that_was_not(tmp_path_factory, tmp_path):
    """Both options end to end: repeats, the per-epoch subset of negatives and the rate are pure
    functions of seed and epoch, so a resumed run trains on exactly what it would have."""
    import torch

    from _training_fixtures import blob_dataset, tiny_config
    from blcam.training import train_model
    from blcam.training.checkpoint import LAST, load_checkpoint
    data = blob_dataset(tmp_path_factory)
    cfg = tiny_config(epochs=2, positive_fraction=0.5, lr_schedule="cosine")
    train_model(data, tmp_path / "straight", cfg, progress=False)
    train_model(data, tmp_path / "resumed", cfg, progress=False, on_epoch=lambda rec: False)
    assert load_checkpoint(tmp_path / "resumed" / LAST)["epoch"] == 1
    train_model(data, tmp_path / "resumed", cfg, progress=False, resume=True)
    a, b = (load_checkpoint(tmp_path / name / LAST) for name in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["lr"] for r in b["history"]] == [cfg.epoch_lr(1), cfg.epoch_lr(2)] and cfg.epoch_lr(2) < cfg.lr
