"""Heatmap → segmentation in the core library (issue 12, point 7): the region around a candidate
and its measurements, on an oblique, anisotropic grid. The Slicer side is tested in
``test_slicer_segmentation.py``, and on a real Detect heatmap in ``test_slicer_pipeline.py``."""

from __future__ import annotations

import numpy as np
import pytest

from _segment_fixtures import GEOMETRY, OBLIQUE_FLIPPED, gradcam_like_heatmap, outer_layer, phantom_lesion
from blcam.errors import BlcamError
from blcam.io.volume import Geometry
from blcam.segment import RegionRule, measure_region, segment_candidate


def _voxel_lps(geometry: Geometry) -> np.ndarray:
    """LPS of every voxel centre, ``(k, j, i, 3)``."""
    kji = np.stack(np.indices(geometry.shape), axis=-1).reshape(-1, 3)
    return geometry.index_to_lps(kji[:, ::-1].astype(float)).reshape(*geometry.shape, 3)


def test_measurements_are_volume_and_principal_diameters_in_mm_whatever_the_grid():
    rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    semi = np.array([7.0, 4.5, 3.0])
    centre = GEOMETRY.index_to_lps((np.asarray(GEOMETRY.size) - 1) / 2.0)
    local = (_voxel_lps(GEOMETRY) - centre) @ rotation           # coordinates along the ellipsoid's axes
    mask = ((local / semi) ** 2).sum(axis=-1) <= 1.0
    m = measure_region(mask, GEOMETRY)
    assert m.voxels == mask.sum() and m.volume_mm3 == pytest.approx(mask.sum() * np.prod(GEOMETRY.spacing))
    assert m.volume_mm3 == pytest.approx(4 / 3 * np.pi * semi.prod(), rel=0.03)
    assert m.equivalent_diameter_mm == pytest.approx(2 * semi.prod() ** (1 / 3), rel=0.01)
    # Each diameter along the true axis, within one voxel's width seen along that axis.
    edges = np.asarray(GEOMETRY.direction).reshape(3, 3) @ np.diag(GEOMETRY.spacing)
    for diameter, axis, true_axis, true_diameter in zip(m.diameters_mm, m.axes_lps, rotation.T, 2 * semi, strict=True):
        assert abs(np.dot(axis, true_axis)) > 0.99
        assert abs(diameter - true_diameter) <= np.abs(np.asarray(axis) @ edges).sum()
    np.testing.assert_allclose(m.centroid_lps, centre, atol=0.05)
    # A region cropped to its box and given its offset measures the same.
    lo = np.argwhere(mask).min(axis=0)
    cropped = measure_region(mask[lo[0]:, lo[1]:, lo[2]:], GEOMETRY, offset_kji=lo)
    np.testing.assert_allclose(cropped.centroid_lps, m.centroid_lps, atol=1e-9)
    assert cropped.diameters_mm == pytest.approx(m.diameters_mm)
    with pytest.raises(ValueError, match="empty"):
        measure_region(np.zeros((3, 3, 3), bool), GEOMETRY)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_of_a_hypoechoic_lesion_lies_inside_it_with_its_volume(seed):
    """Acceptance: a Grad-CAM-coarse heatmap over a phantom cyst (oblique, anisotropic grid)
    gives a segment inside the lesion with a volume within 30 % of the lesion's.

    Tolerance at the boundary: the segment may hold voxels of the mask's outer one-voxel layer
    (the partial-volume rim: voxels that straddle the edge and are darker than the
    surroundings), never beyond; and at most 1 % of its voxels lie outside the mask at all."""
    image, mask, centroid = phantom_lesion(seed)
    heat = gradcam_like_heatmap(mask, seed=seed)
    region = segment_candidate(heat, GEOMETRY, centroid, image)
    segment = region.full(mask.shape)
    assert region.refined and not region.capped
    assert not (segment & ~outer_layer(mask)).any()
    assert (segment & ~mask).sum() <= 0.01 * segment.sum()
    assert 0.7 * mask.sum() <= segment.sum() <= 1.3 * mask.sum()
    # Its measurements are the segment's, in mm through the oblique geometry.
    m, truth = region.measurements, measure_region(mask, GEOMETRY)
    assert m.voxels == segment.sum()
    assert m.volume_mm3 == pytest.approx(segment.sum() * np.prod(GEOMETRY.spacing))
    np.testing.assert_allclose(m.diameters_mm, truth.diameters_mm, rtol=0.15)
    # The heatmap alone (no image) finds the lesion but not its outline.
    hot = segment_candidate(heat, GEOMETRY, centroid).full(mask.shape)
    assert (hot & mask).sum() > 0.5 * hot.sum() and hot.sum() != segment.sum()


def _blob(shape, centre, sigma, peak):
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return peak * np.exp(-(((grid - centre) / sigma) ** 2).sum(axis=-1) / 2)


ISO = Geometry((30, 30, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), OBLIQUE_FLIPPED)


def test_without_an_image_the_region_is_the_connected_hot_region_around_the_candidates_peak():
    heat = np.maximum(_blob(ISO.shape, (10, 10, 10), 2.0, 1.0), _blob(ISO.shape, (10, 20, 22), 2.0, 0.9))
    off_peak = (10.0, 12.0, 11.0)                                  # 2.2 mm from the peak
    region = segment_candidate(heat, ISO, off_peak)
    assert region.seed_kji == (10, 10, 10) and region.peak == pytest.approx(1.0) and region.level == 0.5
    from scipy import ndimage as ndi
    labels, _ = ndi.label(heat >= 0.5)
    np.testing.assert_array_equal(region.full(ISO.shape), labels == labels[10, 10, 10])
    assert not region.refined and region.dark_level is None
    # The other blob is its own candidate, at half of *its* peak.
    other = segment_candidate(heat, ISO, (10, 20, 22))
    assert other.level == pytest.approx(0.45) and not (other.full(ISO.shape) & region.full(ISO.shape)).any()
    # An absolute threshold is one scale for all candidates.
    strict = segment_candidate(heat, ISO, off_peak, rule=RegionRule(threshold=0.8))
    np.testing.assert_array_equal(strict.full(ISO.shape), (heat >= 0.8) & (labels == labels[10, 10, 10]))
    assert strict.level == 0.8


def test_the_region_never_leaves_the_cap_nor_the_envelope():
    everywhere = np.ones(ISO.shape, np.float32)                   # a heatmap hot all over
    capped = segment_candidate(everywhere, ISO, (10, 15, 15), rule=RegionRule(radius_mm=6.0))
    distance = np.linalg.norm(np.stack(np.indices(ISO.shape), -1) - (10, 15, 15), axis=-1)
    np.testing.assert_array_equal(capped.full(ISO.shape), distance <= 6.0)
    assert capped.capped
    # A dark band through the whole volume touches the dark lesion: the region follows the
    # band only as far as the heatmap's envelope (plus the one-voxel rim), not through the volume.
    rng = np.random.default_rng(0)
    image = rng.normal(120, 8, ISO.shape)
    image[distance <= 4.0] = 20
    image[8:12, 19:23, :] = 25
    heat = _blob(ISO.shape, (10, 15, 15), 2.5, 1.0)
    region = segment_candidate(heat, ISO, (10, 15, 15), image)
    segment = region.full(ISO.shape)
    envelope = heat >= 0.1 * heat.max()
    assert region.refined and not region.capped
    assert not (segment & ~outer_layer(envelope)).any()
    assert segment[10, 21, :].sum() < 20                           # the band is 30 voxels long


def test_a_lesion_that_is_not_darker_than_its_surroundings_keeps_the_hot_core():
    rng = np.random.default_rng(1)
    distance = np.linalg.norm(np.stack(np.indices(ISO.shape), -1) - (10, 15, 15), axis=-1)
    image = rng.normal(100, 8, ISO.shape)
    image[distance <= 4.0] = 180                                    # hyperechoic
    heat = _blob(ISO.shape, (10, 15, 15), 2.5, 1.0)
    region = segment_candidate(heat, ISO, (10, 15, 15), image)
    assert not region.refined and region.dark_level is None
    np.testing.assert_array_equal(region.full(ISO.shape), segment_candidate(heat, ISO, (10, 15, 15)).full(ISO.shape))
    off = segment_candidate(heat, ISO, (10, 15, 15), image, RegionRule(refine=False))
    assert not off.refined


@pytest.mark.parametrize("kwargs, call, message", [
    ({"rule": RegionRule(fraction=0.0)}, None, "fraction 0.0"),
    ({"rule": RegionRule(fraction=1.5)}, None, "fraction 1.5"),
    ({"rule": RegionRule(threshold=2.0)}, None, "threshold 2.0"),
    ({"rule": RegionRule(envelope=0.0)}, None, "envelope 0.0"),
    ({"rule": RegionRule(radius_mm=-1.0)}, None, "radius -1.0 mm"),
    ({"rule": RegionRule(smoothing_mm=-0.5)}, None, "smoothing -0.5 mm"),
    ({"index_kji": (10, 15, 40)}, None, r"candidate at voxel \(k, j, i\) \(10, 15, 40\) is outside"),
    ({"index_kji": (np.nan, 1, 1)}, None, r"\(nan, 1, 1\) is outside the volume"),
    ({"index_kji": (1, 1)}, None, r"\(1, 1\) is outside the volume"),
    ({"heatmap": np.ones((5, 5, 5))}, None, r"heatmap of shape \(5, 5, 5\) is not on the volume's grid"),
    ({"image": np.ones((5, 5, 5))}, None, r"image of shape \(5, 5, 5\) is not on the heatmap's grid"),
    ({"heatmap": np.zeros(ISO.shape)}, None, "peaks at 0.000"),
    ({"rule": RegionRule(threshold=0.9)}, "weak", "peaks at 0.500, below the threshold 0.900"),
])
def test_bad_values_stop_with_a_message_naming_them(kwargs, call, message):
    args = {"heatmap": _blob(ISO.shape, (10, 15, 15), 2.0, 0.5 if call == "weak" else 1.0), "geometry": ISO,
            "index_kji": (10, 15, 15), "image": None, "rule": RegionRule()}
    args.update(kwargs)
    with pytest.raises(BlcamError, match=message):
        segment_candidate(**args)
