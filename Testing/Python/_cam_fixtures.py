"""Shared fixtures for the CAM, detection and localisation tests.

``dark_blob_model`` is a MONAI ResNet-10 whose weights are set by hand so that it *is* a
lesion detector by construction: channel 0 of the stem averages the input over 7×7×7 and
negates it (hypoechoic lesions are dark), every residual block passes channel 0 through its
shortcut, and the linear unit reads channel 0. Its Grad-CAM must therefore peak on a planted
dark blob, which pins down the CAM machinery (target layer, scaling, upsampling, geometry)
without training anything. Random-initialised models are used where the property tested is
an exact identity that holds for any weights.
"""

from __future__ import annotations

import csv

import numpy as np
import torch

from blcam.io.atomic import write_json_atomic
from blcam.model import build_model, make_metadata, save_model


def dark_blob_model(widen: float = 0.25, threshold: float = 0.5, bias: float = -0.2, spread: bool = False):
    """Hand-built ResNet-10 (paper stem): local logit = smoothed darkness − threshold + bias.

    ``spread=True`` also makes every block's main path a 3×3×3 mean of channel 0, so each
    feature integrates its whole receptive field (as trained networks do) instead of
    sampling the stem's output at its own position.
    """
    torch.manual_seed(0)
    model = build_model("resnet10", "paper", widen).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.zero_()
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
        model.conv1.weight[0] = -1.0 / model.conv1.weight[0].numel()
        model.bn1.bias[0] = -threshold
        for layer in (model.layer2, model.layer3, model.layer4):
            layer[0].downsample[0].weight[0, 0] = 1.0
        if spread:
            for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
                layer[0].conv1.weight[0, 0] = 1.0 / 27
                layer[0].conv2.weight[0, 0] = 1.0 / 27
        model.fc.weight.zero_()
        model.fc.weight[0, 0] = 1.0
        model.fc.bias.fill_(bias)
    return model


def random_model(widen: float = 0.25, stem: str = "paper", seed: int = 0):
    """Random weights with random batch-norm statistics (so folding BN is really exercised)."""
    torch.manual_seed(seed)
    model = build_model("resnet10", stem, widen).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


def blob_volume(shape, centres_kji, radius_vox: float = 7.0, seed: int = 0) -> np.ndarray:
    """uint8 speckle-like background (~128 ± 20) with dark (≈20) balls at ``centres_kji``."""
    rng = np.random.default_rng(seed)
    vol = np.clip(rng.normal(128, 20, shape), 0, 255)
    grid = np.indices(shape).reshape(3, -1).T
    for c in centres_kji:
        inside = np.linalg.norm(grid - np.asarray(c), axis=1) <= radius_vox
        vol.reshape(-1)[inside] = 20 + rng.normal(0, 3, inside.sum())
    vol[0, 0, 0], vol[-1, -1, -1] = 0, 255  # fix the robust range so normalisation is near-identity
    return np.clip(vol, 0, 255).astype(np.uint8)


def save_test_model(path, model, crop=(16, 48, 48), patch=(24, 72, 72)):
    """Write ``model`` as a model file the CLI can load."""
    save_model(path, model, make_metadata("resnet10", "paper", model.conv1.out_channels / 64, crop, patch))
    return path


def write_detect_folder(det, volumes) -> None:
    """A minimal ``blcam detect`` output folder, without running a model: ``volumes`` holds
    ``(name, volume path, LPS points, scores)``; the volume score is the best candidate's."""
    rows = []
    for name, volume, points, scores in volumes:
        cands = [{"label": f"lesion-{n + 1}", "score": s, "x": p[0], "y": p[1], "z": p[2]}
                 for n, (p, s) in enumerate(zip(points, scores, strict=True))]
        write_json_atomic(det / f"{name}_candidates.json", {"candidates": cands})
        rows.append({"name": name, "volume": str(volume), "volume_score": max(scores, default=0.0),
                     "candidates_json": f"{name}_candidates.json"})
    with (det / "detections.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
