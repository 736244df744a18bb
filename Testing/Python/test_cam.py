"""Grad-CAM on patches, the fast whole-volume map and the sliding baseline (blcam.cam)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.visualize import GradCAM

from _cam_fixtures import blob_volume, dark_blob_model, random_model
from blcam.cam.base import MapOptions
from blcam.cam.dense import DenseLesionMapper, default_slab_step
from blcam.cam.gradcam import PatchGradCAM, patch_gradcam
from blcam.cam.maps import LesionMap, crop_mean, crop_window, feature_offset, upsample_features
from blcam.cam.registry import make_mapper
from blcam.cam.sliding import window_count
from blcam.cam.tiling import plan_tiles, stage_geometry
from blcam.errors import BlcamError
from blcam.intensity import network_input, normalise_volume
from blcam.model import build_model
from blcam.score_calibration import sigmoid

STRIDE = (16, 16, 16)


def _net_input(stored: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return network_input(torch.from_numpy(stored).to(dtype))[None, None]


def _trunk_logit(model, stored: np.ndarray) -> np.ndarray:
    """Reference local-logit grid: the plain (unfolded, untiled) MONAI trunk, in the model's dtype."""
    m = model.eval()
    with torch.inference_mode():
        x = m.maxpool(m.act(m.bn1(m.conv1(_net_input(stored, m.conv1.weight.dtype)))))
        a = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return (torch.einsum("bc...,c->b...", a, m.fc.weight[0]) + m.fc.bias[0])[0].numpy()


# bfloat16 keeps 8 significant bits: rounding to nearest moves a value by at most 2⁻⁹ of itself.
BF16_UNIT = 2.0 ** -9
# float64's unit roundoff is 2⁻⁵³ ≈ 1.1e-16; a ResNet-10 path sums ≤ 10⁴ products per layer over
# ≤ 12 layers, so any summation order on any CPU stays within ~1.3e-11 of the magnitudes summed.
F64_TOL = 1e-9


def _bf16_store_bound(model, stored: np.ndarray) -> np.ndarray:
    """Per local logit, a 6-sigma bound on the change from rounding the stored stage outputs to bf16.

    The fast path keeps the outputs ``s`` of stem+layer1 and of layer2 in bfloat16: each element
    moves by an error uniform in ``±BF16_UNIT · |s|`` (standard deviation that over √3), and to
    first order the logit moves by ``Σ ∂logit/∂s · error``, a sum of thousands of independent
    terms with standard deviation ``BF16_UNIT · sqrt(Σ (∂logit/∂s · s)² / 3)`` (one backward pass
    per logit, float32). Float32 reordering (BN folding, other kernels) is ~2⁻²⁴ per product,
    far below this; callers allow 6 standard deviations (the worst case, all roundings aligned,
    is ``BF16_UNIT · Σ |∂logit/∂s · s|``: sound but 30× looser, it would hide tiling errors).
    """
    m = model.eval()
    with torch.enable_grad():
        s1 = m.layer1(m.maxpool(m.act(m.bn1(m.conv1(_net_input(stored)))))).detach().requires_grad_()
        s2 = m.layer2(s1)
        s2.retain_grad()
        a = m.layer4(m.layer3(s2))
        logit = torch.einsum("bc...,c->b...", a, m.fc.weight[0])[0]
        sd = np.zeros(logit.shape, np.float64)
        for cell in np.ndindex(*logit.shape):
            g1, g2 = torch.autograd.grad(logit[cell], (s1, s2), retain_graph=True)
            sd[cell] = BF16_UNIT * float(((g1 * s1) ** 2).sum() + ((g2 * s2) ** 2).sum()) ** 0.5 / 3 ** 0.5
    return 6 * sd


def test_receptive_field_reach_of_the_trunk():
    # ResNet-10, MONAI stem: 7³ conv (3) + max-pool (2) + one block per layer (4·(1+2+4+8) jumps ... )
    model = build_model("resnet10", "paper", 0.25)
    g = stage_geometry([model.conv1, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4])
    assert g.stride == (16, 16, 16) and g.reach == (50, 50, 50)
    fast = build_model("resnet18", "fast", 0.25)
    g = stage_geometry([fast.conv1, fast.maxpool, fast.layer1, fast.layer2, fast.layer3, fast.layer4])
    assert g.stride == (16, 32, 32) and g.reach == (110, 217, 217)
    compact = build_model("resnet10", "compact", 0.25)       # 3³ stem: 2 voxels less reach, same stride
    g = stage_geometry([compact.conv1, compact.maxpool, compact.layer1, compact.layer2, compact.layer3,
                        compact.layer4])
    assert g.stride == (16, 16, 16) and g.reach == (48, 48, 48)


def test_tiles_cover_the_output_once_and_start_on_the_stride():
    geometry = stage_geometry([build_model("resnet10", "paper", 0.25).layer2])
    tiles = plan_tiles((40, 150, 170), geometry, max_voxels=20_000)
    assert len(tiles) > 8
    seen = np.zeros([int(np.ceil(n / 2)) for n in (40, 150, 170)], int)
    for inp, _, where in tiles:
        assert all(s.start % 2 == 0 for s in inp)
        seen[where] += 1
    assert (seen == 1).all()


def test_tiled_pass_equals_the_untiled_network():
    """Seamless tiling: forced tiny tiles give the same local logits as one whole pass."""
    model = random_model(widen=0.125)
    stored = np.random.default_rng(0).integers(0, 256, (32, 64, 128), dtype=np.uint8)
    mapper = DenseLesionMapper(model, (16, 64, 64), "cpu", max_memory_gb=64)
    whole = mapper.logit_grid(stored)
    steps = []
    mapper.plan = lambda shape, resident=None, batch=1: [50_000, 20_000, 3_600]       # 16, 16 and 8 tiles
    tiled = mapper.logit_grid(stored, on_step=lambda stage, done, total: steps.append((stage, total)))
    assert min(total for _, total in steps) > 1                # every stage really was tiled
    bound = _bf16_store_bound(model, stored)
    reference = _trunk_logit(model, stored)
    # whole vs reference: one bf16 rounding per stored element (_bf16_store_bound); tiled vs
    # whole: both were rounded, each with its own (nearly independent) error: √2 × the bound.
    assert (np.abs(whole - reference) <= bound).all()
    assert (np.abs(tiled - whole) <= 2 ** 0.5 * bound).all()
    # The bound is tight enough to mean something: far below the logits' own spread.
    assert bound.max() < 0.1 * np.ptp(reference)
    # In float64 without bf16 stores, tiling and BN folding are exact to rounding.
    exact = DenseLesionMapper(model.double(), (16, 64, 64), "cpu", 64, dtype=torch.float64, store=None)
    whole64 = exact.logit_grid(stored)
    exact.plan = mapper.plan
    assert np.abs(exact.logit_grid(stored) - whole64).max() <= F64_TOL * np.abs(whole64).max()


def test_a_compact_stem_model_is_mapped_exactly():
    """``--stem compact`` (3³ first convolution) goes through the same tiled, BN-folded path:
    in float64 its tiled map equals the plain network's local logits to rounding."""
    model = random_model(widen=0.125, stem="compact").double()
    stored = np.random.default_rng(1).integers(0, 256, (32, 64, 96), dtype=np.uint8)
    exact = DenseLesionMapper(model, (16, 64, 64), "cpu", 64, dtype=torch.float64, store=None)
    exact.plan = lambda shape, resident=None, batch=1: [30_000, 12_000, 2_000]     # forced tiles
    tiled = exact.logit_grid(stored)
    reference = _trunk_logit(model, stored)
    assert tiled.shape == reference.shape == (2, 4, 6)
    assert np.abs(tiled - reference).max() <= F64_TOL * np.abs(reference).max()


def test_fast_path_equals_patch_gradcam_on_the_same_crop():
    """GAP + linear: Grad-CAM is the CAM of the final weights (exact, any weights).

    The identity is exact, so it is checked in float64 (no bfloat16 stores), with a tolerance
    from float64 rounding (``F64_TOL``) relative to the magnitudes summed: ``Σ_c |w_c A_c|``.
    """
    model = random_model(seed=3).double()
    crop = (16, 64, 64)
    patch = np.random.default_rng(1).integers(0, 256, crop, dtype=np.uint8)
    dense = DenseLesionMapper(model, crop, dtype=torch.float64, store=None)(patch)
    x = _net_input(patch, torch.float64)
    gradcam = PatchGradCAM(model, STRIDE, normalise=False)
    raw = gradcam.feature_map(x)[0, 0].numpy()
    _, acts = gradcam.last()
    magnitude = torch.einsum("bc...,c->b...", acts.abs(), model.fc.weight[0].abs()).detach()[0].numpy()
    cam = np.maximum(dense.logit - dense.bias, 0)
    assert raw.shape == cam.shape == (1, 4, 4)
    n_features = raw.size
    assert (np.abs(raw * n_features - cam) <= F64_TOL * (magnitude + abs(dense.bias))).all()
    assert cam.max() > 100 * F64_TOL * magnitude.max()        # a non-trivial map was compared
    upsampled = patch_gradcam(model.float(), patch, STRIDE)
    assert np.corrcoef(upsampled.ravel(), dense.heatmap.ravel())[0, 1] >= 0.99


def test_gradcam_hottest_voxel_is_the_planted_lesion():
    model = dark_blob_model()
    crop = (16, 64, 64)
    # The hand-built detector answers at its receptive-field centres (16·f), where feature
    # (0, 2, 2) is reported: voxel (0, 32, 32). Plant the lesion off that grid point.
    lesion = (4, 36, 36)
    stored = normalise_volume(blob_volume(crop, [lesion], radius_vox=10))
    heat = patch_gradcam(model, stored, STRIDE)
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0.0
    hottest = np.unravel_index(np.argmax(heat), heat.shape)
    assert np.linalg.norm(np.subtract(hottest, lesion)) <= 10
    assert heat[lesion] > 0.5
    # MONAI's default post-processing (min→1, max→0) would have made this voxel the coldest.
    default = GradCAM(dark_blob_model(), target_layers="layer4", upsampler=lambda s: lambda x: x)
    assert default(_net_input(stored), class_idx=0).min() == 0.0
    assert default(_net_input(stored), class_idx=0)[0, 0, 0, 2, 2] == 0.0


def test_gradcam_leaves_the_callers_model_without_hooks():
    model = random_model()
    PatchGradCAM(model, STRIDE)(_net_input(np.zeros((16, 32, 32), np.uint8)))
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_crop_mean_reproduces_the_networks_crop_logit():
    """Calibration: the crop-sized box mean of local logits is the crop's logit (exact identity,
    so checked in float64 with float64's tolerance, see ``F64_TOL``)."""
    model = random_model(seed=5).double()
    crop = (16, 64, 64)
    patch = np.random.default_rng(2).integers(0, 256, crop, dtype=np.uint8)
    dense = DenseLesionMapper(model, crop, dtype=torch.float64, store=None)(patch)
    with torch.inference_mode():
        logit = float(model(_net_input(patch, torch.float64))[0, 0])
    lo = [lo for lo, _ in crop_window(crop, STRIDE)]
    p = tuple(-v for v in lo)  # the feature whose window is exactly this crop's grid
    scale = np.abs(dense.logit).max() + abs(logit)
    # crop_mean hands back float32 (the map's type): one more rounding, 2⁻²⁴ of the value.
    tol = F64_TOL * scale + 2.0 ** -24 * abs(logit)
    assert abs(float(crop_mean(dense.logit, crop, STRIDE)[p]) - logit) <= tol


def test_upsampling_places_features_at_receptive_field_centres():
    grid = np.zeros((2, 3, 3), np.float32)
    grid[1, 1, 2] = 1.0
    up = upsample_features(grid, (32, 48, 40), STRIDE)
    assert up.shape == (32, 48, 40)
    peak = np.unravel_index(np.argmax(up), up.shape)
    assert peak[0] >= 16 and peak[1] == 16 and peak[2] >= 32             # 16 · f; held beyond the last
    assert up[16, 16, 32] == 1.0 and up[16, 24, 32] == pytest.approx(0.5) and up[8, 16, 32] == pytest.approx(0.5)
    assert feature_offset((16, 32, 32)) == (0.0, 0.0, 0.0)
    lm = LesionMap(grid, 0.0, STRIDE, (16, 48, 48), up, 1.0)
    np.testing.assert_allclose(lm.feature_to_index((1, 1, 2)), (16, 16, 32))


def test_fast_path_and_sliding_baseline_agree_on_a_lesion():
    """The slow reference (Grad-CAM per window, blended) and both fast contexts see the same lesion
    (each built by its --method name, as Detect builds it)."""
    model = dark_blob_model(spread=True)
    lesion = (16, 48, 48)
    stored = normalise_volume(blob_volume((32, 80, 96), [lesion], radius_vox=10, seed=4))
    crop = (16, 48, 48)
    steps = []
    slow = make_mapper("sliding", model, crop, STRIDE)(stored, on_step=lambda *a: steps.append(a))
    assert len(steps) == window_count(stored.shape, crop) == 27
    maps = {"sliding": slow}
    for context in ("slab", "volume"):
        maps[context] = make_mapper("fast", model, crop, STRIDE, options=MapOptions(context=context))(stored)
        assert np.corrcoef(maps[context].heatmap.ravel(), slow.heatmap.ravel())[0, 1] >= 0.85
    assert maps["slab"].logit.shape == (3, 5, 6) and maps["volume"].logit.shape == (2, 5, 6)
    for name, lm in maps.items():
        assert np.unravel_index(np.argmax(lm.logit), lm.logit.shape) == (1, 3, 3), name
        hottest = np.unravel_index(np.argmax(lm.heatmap), lm.heatmap.shape)
        assert np.linalg.norm(np.subtract(hottest, lesion)) <= 16, name        # within one stride
    fast = maps["slab"]
    assert sigmoid(fast.crop_logit()[1, 3, 3]) > 0.5 > sigmoid(fast.crop_logit()[0, 0, 0])


def test_slab_rows_are_passes_over_crop_deep_slabs():
    model = random_model(seed=7).double()   # float64, no bf16 stores: equal up to F64_TOL
    stored = np.random.default_rng(3).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    mapper = DenseLesionMapper(model, (16, 48, 48), dtype=torch.float64, store=None)
    assert mapper.slab_starts(40) == [0, 8, 16, 24]
    lm = mapper(stored)
    assert lm.logit.shape == (4, 3, 3) and lm.stride == (8, 16, 16) and lm.offset == (7.5, 0.0, 0.0)
    row = mapper.logit_grid(stored[16:32])[0]
    assert np.abs(lm.logit[2] - row).max() <= F64_TOL * np.abs(row).max()
    np.testing.assert_allclose(lm.feature_to_index((2, 0, 0)), (23.5, 0.0, 0.0))   # slab 2's centre slice


def test_default_slab_step_follows_the_training_depth_jitter():
    """Slabs every ``patch - crop`` slices keep each slice within the training crops' jitter."""
    assert default_slab_step((16, 160, 160), (28, 280, 280)) == 12          # the paper's sizes
    assert default_slab_step((16, 48, 48), (20, 64, 64)) == 4
    assert default_slab_step((16, 48, 48)) == 8                             # no patch: half the crop
    assert default_slab_step((16, 48, 48), (16, 64, 64)) == 8               # no depth jitter at all
    assert default_slab_step((16, 48, 48), (48, 64, 64)) == 8               # jitter deeper than a crop
    assert DenseLesionMapper(random_model(seed=1), (16, 48, 48), slab_step=12).slab_starts(40) == [0, 12, 24]


def test_memory_budget_is_planned_and_enforced():
    model = build_model("resnet10", "paper", 1.0)
    mapper = DenseLesionMapper(model, (16, 160, 160), "cpu", max_memory_gb=8)
    cells = mapper.plan((354, 682, 865))                 # the largest TDSC-ABUS volume
    assert all(c > 0 for c in cells) and cells[0] >= 4_000_000
    with pytest.raises(BlcamError, match="max-memory-gb"):
        DenseLesionMapper(model, (16, 160, 160), "cpu", max_memory_gb=4).plan((354, 682, 865))


def test_the_finer_map_and_the_papers_map_agree_on_the_hot_spot():
    """Output stride 8 (layer4 without its stride, dilated) maps twice as finely, same detector."""
    paper = dark_blob_model(spread=True)
    fine = build_model("resnet10", "paper", 0.25, output_stride=8).eval()
    fine.load_state_dict(paper.state_dict())
    lesion = (24, 44, 52)
    stored = normalise_volume(blob_volume((48, 96, 112), [lesion], radius_vox=9, seed=5))
    crop = (16, 48, 48)
    coarse_map = DenseLesionMapper(paper, crop, context="volume")(stored)
    fine_map = DenseLesionMapper(fine, crop, context="volume")(stored)
    assert coarse_map.stride == (16, 16, 16) and fine_map.stride == (8, 8, 8)
    assert all(f == 2 * c or f == 2 * c - 1 for f, c in zip(fine_map.logit.shape, coarse_map.logit.shape, strict=True))
    hot = [m.feature_to_index(np.unravel_index(np.argmax(m.logit), m.logit.shape)) for m in (coarse_map, fine_map)]
    assert np.linalg.norm(hot[0] - hot[1]) <= 16                   # within one coarse feature
    assert np.linalg.norm(hot[1] - lesion) <= np.linalg.norm(hot[0] - lesion) + 1e-9   # the finer one is nearer
    assert np.linalg.norm(hot[1] - lesion) <= 8
