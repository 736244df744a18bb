"""One interface for whole-volume maps (blcam.cam.base), and the --method registry behind Detect."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from blcam.cam import MAPPERS, LesionMapper, MapOptions, make_mapper
from blcam.cam.dense import DenseLesionMapper, default_slab_step
from blcam.cam.maps import LesionMap, normalise_heatmap, upsample_features
from blcam.cam.sliding import SlidingGradCAMMapper, sliding_lesion_map
from blcam.cli import main
from blcam.detect.pipeline import Detector, DetectSettings
from blcam.errors import BlcamError
from blcam.intensity import normalise_volume
from blcam.io.volume import Geometry, write_volume

STRIDE = (16, 16, 16)
CROP = (16, 48, 48)
PATCH = (24, 72, 72)


@pytest.mark.parametrize("method", ["fast", "sliding"])
def test_each_registered_map_is_a_lesion_mapper_equal_to_its_direct_call(method):
    """Through the registry, each map computes exactly what its own constructor or function did."""
    model = dark_blob_model(spread=True)
    stored = normalise_volume(blob_volume((32, 48, 48), [(16, 24, 24)], radius_vox=8, seed=2))
    mapper = make_mapper(method, model, CROP, STRIDE, "cpu", MapOptions(patch=PATCH, batch_size=2))
    assert isinstance(mapper, LesionMapper) and type(mapper) is MAPPERS[method]
    assert mapper.crop == CROP and mapper.stride == STRIDE
    steps = []
    got = mapper(stored, on_step=lambda *a: steps.append(a))
    if method == "fast":
        want = DenseLesionMapper(model, CROP, "cpu", 8.0, "slab", default_slab_step(CROP, PATCH))(stored)
    else:
        want = sliding_lesion_map(model, stored, CROP, STRIDE, "cpu", 2)
    assert isinstance(got, LesionMap) and steps
    np.testing.assert_array_equal(got.logit, want.logit)
    np.testing.assert_array_equal(got.heatmap, want.heatmap)
    assert (got.stride, got.crop, got.offset, got.window, got.bias, got.cam_max) == \
        (want.stride, want.crop, want.offset, want.window, want.bias, want.cam_max)


def test_unknown_method_names_the_registered_ones():
    with pytest.raises(BlcamError, match="fast, sliding"):
        make_mapper("nope", dark_blob_model(), CROP, STRIDE)
    assert set(MAPPERS) >= {"fast", "sliding"} and MAPPERS["sliding"] is SlidingGradCAMMapper


class DarknessMapper(LesionMapper):
    """A new map in one class, with no network: the darker the 9-voxel neighbourhood of a
    feature position, the higher its local logit (a dark planted blob becomes the top candidate)."""

    calls = 0                                   # volumes mapped, in this process

    def __init__(self, crop, stride, options: MapOptions):
        self.crop, self.stride, self.options = tuple(crop), tuple(stride), options

    @classmethod
    def build(cls, model: torch.nn.Module, crop, stride, device, options: MapOptions) -> DarknessMapper:
        return cls(crop, stride, options)

    def __call__(self, stored_uint8: np.ndarray, progress: bool = False, on_step=None) -> LesionMap:
        sk, sj, si = self.stride
        logit = (128.0 - uniform_filter(stored_uint8.astype(np.float32), 9)[::sk, ::sj, ::si]) / 64.0
        heat, top = normalise_heatmap(upsample_features(np.maximum(logit, 0), stored_uint8.shape, self.stride))
        DarknessMapper.calls += 1
        if on_step is not None:
            on_step("darkness", 1, 1)
        return LesionMap(logit, 0.0, self.stride, self.crop, heat, top)


def test_a_map_registered_by_name_is_what_detect_runs(tmp_path, monkeypatch, capsys):
    """One registry entry makes a new map a --method of Detector and of the CLI."""
    monkeypatch.setitem(MAPPERS, "darkness", DarknessMapper)
    model = save_test_model(tmp_path / "m.safetensors", dark_blob_model(), crop=CROP, patch=PATCH)
    detector = Detector(model, DetectSettings(method="darkness", batch_size=3, slab_step=4))
    assert isinstance(detector.mapper, DarknessMapper) and detector.mapper.stride == detector.stride
    assert detector.mapper.options == MapOptions(8.0, "slab", 4, list(PATCH), 3)

    shape, lesion = (32, 64, 80), (16, 32, 48)          # the lesion on a feature position
    write_volume(tmp_path / "case.nrrd", blob_volume(shape, [lesion], radius_vox=9),
                 Geometry(tuple(reversed(shape)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    before = DarknessMapper.calls
    assert main(["detect", str(model), str(tmp_path / "case.nrrd"), "--out", str(tmp_path / "out"),
                 "--method", "darkness", "--device", "cpu", "--overlays", "0", "--progress-json"]) == 0
    records = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert DarknessMapper.calls == before + 1                          # this map ran, once
    assert {r["stage"] for r in records if r["event"] == "progress"} >= {"map", "done"}
    assert records[-1] == {"event": "done", "summary": str(tmp_path / "out" / "detections.csv")}
    summary = list(csv.DictReader((tmp_path / "out" / "detections.csv").open()))
    assert summary[0]["method"] == "darkness"
    top = next(csv.DictReader((tmp_path / "out" / "case_candidates.csv").open()))
    assert np.abs(np.subtract([float(top[a]) for a in "kji"], lesion)).max() <= 1.0
