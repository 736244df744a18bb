"""The focal loss option: BCE at γ = 0, the textbook focal loss on hard targets, and a
recorded, validated training option."""

from __future__ import annotations

import pytest
import torch

from _training_fixtures import blob_dataset, one_thread, tiny_config  # noqa: F401 (one_thread: autouse)
from blcam.cli import build_parser
from blcam.cli.cmd_train import config_from_args
from blcam.errors import BlcamError
from blcam.evaluation import evaluate_model
from blcam.model import read_metadata
from blcam.training import TrainConfig, train_model
from blcam.training.losses import binary_loss


def test_gamma_zero_is_bce_and_hard_targets_give_the_textbook_focal_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, dtype=torch.float64, generator=g) * 3
    targets = (torch.rand(64, dtype=torch.float64, generator=g) > 0.7).double()
    assert torch.equal(binary_loss(logits, targets), torch.nn.BCEWithLogitsLoss()(logits, targets))
    p = torch.sigmoid(logits)
    p_t = torch.where(targets > 0.5, p, 1 - p)
    textbook = (-(1 - p_t) ** 2 * torch.log(p_t)).mean()        # Lin et al. 2017, α = 1
    torch.testing.assert_close(binary_loss(logits, targets, 2.0), textbook, rtol=1e-12, atol=0)


def test_focal_weighting_moves_the_gradient_to_the_hard_examples():
    # Two positives: one the network already gets right (logit +4), one it misses (-1).
    logits = torch.tensor([4.0, -1.0], dtype=torch.float64, requires_grad=True)
    targets = torch.ones(2, dtype=torch.float64)
    shares = []
    for gamma in (0.0, 2.0):
        (grad,) = torch.autograd.grad(binary_loss(logits, targets, gamma), logits)
        shares.append(float(grad[0].abs() / grad[1].abs()))
    assert shares[1] < shares[0] / 20           # the easy example's pull shrinks by (1-p)^γ and more
    # Soft point targets: an output that matches its target exactly costs nothing beyond BCE's own
    # minimum, and carries no gradient.
    soft = torch.tensor([0.3], dtype=torch.float64)
    at_target = torch.logit(soft).requires_grad_(True)
    (grad,) = torch.autograd.grad(binary_loss(at_target, soft, 2.0), at_target)
    assert float(grad.abs()) < 1e-12


def test_focal_gamma_is_a_validated_recorded_training_option():
    args = build_parser("train").parse_args(["train", "patches", "--out", "run", "--focal-gamma", "2"])
    assert config_from_args(args).focal_gamma == 2.0
    assert TrainConfig().focal_gamma == 0.0            # BCE, as in the paper, unless asked for
    with pytest.raises(BlcamError, match="--focal-gamma"):
        TrainConfig(focal_gamma=-1.0)
    # A run recorded before the option existed trained with BCE.
    old = {k: v for k, v in TrainConfig(focal_gamma=2.0).to_dict().items() if k != "focal_gamma"}
    assert TrainConfig.from_dict(old).focal_gamma == 0.0


def test_a_focal_run_learns_and_records_its_loss(tmp_path_factory, tmp_path):
    data = blob_dataset(tmp_path_factory)
    run = tmp_path / "focal"
    train_model(data, run, tiny_config(focal_gamma=2.0), progress=False)
    assert read_metadata(run / "model.safetensors")["training"]["focal_gamma"] == 2.0
    centre = evaluate_model(run, data, split="test", progress=False)["modes"]["centre"]
    assert centre["auc"] >= 0.9, centre
