"""Training recipes: the default departs from the paper in named fields; '--recipe paper' is the paper."""

from __future__ import annotations

from itertools import pairwise

import pytest

from blcam.cli import build_parser
from blcam.cli.cmd_train import config_from_args
from blcam.errors import BlcamError
from blcam.recipes import RECIPES, recipe_config
from blcam.training import TrainConfig


def _config(*extra):
    args = build_parser("train").parse_args(["train", "patches", "--out", "run", *extra])
    return config_from_args(args)


def test_the_paper_recipe_is_the_papers_method():
    paper = _config("--recipe", "paper")
    assert paper.padded_crops and paper.point_loss == 0 and paper.hard_negatives == 0 and paper.output_stride == 16
    assert paper.positive_fraction is None                  # every exported patch once per epoch
    assert paper.resolved_monitor() == "last"               # the 250th epoch, as published
    assert (paper.arch, paper.crop, paper.batch_size, paper.lr, paper.epochs) == ("resnet18", (16, 160, 160), 14,
                                                                                 1e-3, 250)


def test_the_default_recipe_is_trainconfigs_defaults_and_options_override_a_recipe():
    assert _config() == recipe_config("default") == TrainConfig()
    assert TrainConfig().point_loss > 0 and not TrainConfig().padded_crops
    mixed = _config("--recipe", "paper", "--point-loss", "0.5", "--hard-negatives", "2")
    assert mixed.padded_crops and mixed.point_loss == 0.5 and mixed.hard_negatives == 2
    # Every field the paper recipe sets differs from the default: each is a documented departure.
    assert all(getattr(TrainConfig(), k) != v for k, v in RECIPES["paper"].items())
    with pytest.raises(BlcamError, match="recipe"):
        recipe_config("fancy")
    assert _config("--positive-fraction", "as-exported").positive_fraction is None
    assert _config("--recipe", "paper", "--positive-fraction", "0.3").positive_fraction == 0.3
    with pytest.raises(BlcamError, match="positive-fraction"):
        _config("--positive-fraction", "1.5")


def test_learning_rate_schedules_and_runs_recorded_before_them():
    cosine = TrainConfig(epochs=40, lr=1e-3, lr_schedule="cosine")
    rates = [cosine.epoch_lr(e) for e in range(1, 41)]
    assert rates[0] == 1e-3 and all(a > b for a, b in pairwise(rates)) and rates[-1] < 1e-5
    assert all(recipe_config("paper", epochs=40).epoch_lr(e) == 1e-3 for e in (1, 20, 40))
    # A config saved before these fields existed trained every patch once at a constant rate.
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("lr_schedule", "positive_fraction")}
    restored = TrainConfig.from_dict(old)
    assert restored.lr_schedule == "constant" and restored.positive_fraction is None
    assert _config("--lr-schedule", "constant").lr_schedule == "constant"
    assert TrainConfig().lr_schedule == "cosine" and recipe_config("paper").lr_schedule == "constant"
