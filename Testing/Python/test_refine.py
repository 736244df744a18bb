"""Candidate refinement (blcam.detect.refine): the network, asked at a few voxels' spacing, moves a
candidate that sits between feature voxels onto the planted lesion."""

from __future__ import annotations

import numpy as np
import pytest

from _cam_fixtures import blob_volume, dark_blob_model
from blcam.detect.refine import CandidateRefiner, default_mode, trained_inside
from blcam.intensity import normalise_volume

STRIDE = (16, 16, 16)
# Three feature voxels along every axis: the hand-built detector answers at its receptive-field
# centres (a trained one, with one feature along k, learns to answer at the crop's centre slice).
CROP = (48, 48, 48)


@pytest.mark.parametrize("start", [(38.0, 30.0, 50.0), (44.0, 46.0, 36.0)])
def test_local_refinement_moves_an_off_centre_candidate_onto_the_lesion(start):
    # Deep enough that no crop reaches the padding (the hand-built detector reads padding as dark).
    lesion = np.array([40.0, 38.0, 43.0])
    stored = normalise_volume(blob_volume((80, 80, 96), [tuple(lesion.astype(int))], radius_vox=7, seed=2))
    refiner = CandidateRefiner(dark_blob_model(spread=True), CROP, STRIDE, "cpu", mode="local")
    before = np.linalg.norm(np.subtract(start, lesion))
    pos, value = refiner(stored, start)
    after = np.linalg.norm(pos - lesion)
    assert before >= 8 and after <= 3, (pos, before, after)      # from half a feature away to the centre
    assert value >= float(refiner._values(stored, np.asarray([start]))[0])


def test_refinement_stays_put_on_the_lesion_and_inside_the_volume():
    lesion = (20, 20, 20)
    stored = normalise_volume(blob_volume((40, 64, 64), [lesion], radius_vox=7, seed=3))
    refiner = CandidateRefiner(dark_blob_model(spread=True), CROP, STRIDE, "cpu", mode="local")
    pos, _ = refiner(stored, lesion)
    assert np.linalg.norm(pos - lesion) <= 2
    corner, _ = refiner(stored, (0.0, 0.0, 0.0))
    assert np.all(corner >= 0) and np.all(corner <= np.asarray(stored.shape) - 1)


def test_mode_follows_how_the_model_was_trained():
    assert default_mode({"training": {"point_loss": 1.0}}) == "local"
    assert default_mode({"training": {"point_loss": 0.0}}) == "crop"
    assert default_mode({}) == "crop"                              # old model files: the classifier


def test_a_model_trained_inside_the_volume_is_not_refined_into_padding():
    """The hand-built detector reads zero padding as dark, as a network that never saw padding
    may answer anything there: without the limit a candidate by the top rows walks into the
    padding; with it (the default recipe's models) its crop stays inside the volume."""
    stored = normalise_volume(blob_volume((80, 80, 96), [(40, 60, 70)], radius_vox=5, seed=4))
    start = np.array([40.0, 14.0, 30.0])      # the crop placed there already pads 2 rows (anchor 16)
    free = CandidateRefiner(dark_blob_model(spread=True), CROP, STRIDE, "cpu", mode="local")
    kept = CandidateRefiner(dark_blob_model(spread=True), CROP, STRIDE, "cpu", mode="local", inside=True)
    assert free(stored, start)[0][1] <= 10                          # the control: further into the padding
    pos, _ = kept(stored, start)
    low, high = kept.limits(stored.shape, start)
    assert np.all(pos >= low) and np.all(pos <= high) and pos[1] >= 14
    np.testing.assert_allclose(kept.anchor, 16.0)                  # the crop's feature voxel nearest its centre
    np.testing.assert_allclose(low, [16.0, 14.0, 16.0])             # no further out than it started
    np.testing.assert_allclose(high, np.asarray(stored.shape) - 1 - (47 - 16))
    np.testing.assert_allclose(kept.limits(stored.shape, np.array([40.0, 40.0, 40.0]))[0], 16.0)
    assert trained_inside({"training": {"padded_crops": False}})
    assert not trained_inside({"training": {"padded_crops": True}}) and not trained_inside({})
