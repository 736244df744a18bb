"""Ensembles (blcam.ensemble, blcam ensemble): one model file whose logits, lesion map and
refinement are the mean of its members', usable by Detect like any model, and refused when
its members were not trained alike."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file, save_file

from _cam_fixtures import blob_volume, dark_blob_model, random_model, save_test_model
from blcam.cam.local_logits import LocalLogitNet, local_logit_net
from blcam.cam.mean_map import MeanMapper
from blcam.cam.registry import make_mapper
from blcam.cli import main
from blcam.detect.pipeline import DetectSettings, detect
from blcam.detect.plan import plan_detect
from blcam.ensemble import write_ensemble
from blcam.errors import BlcamError
from blcam.intensity import normalise_volume
from blcam.io.volume import Geometry, write_volume
from blcam.model import Ensemble, load_model, read_metadata

CROP, PATCH = (16, 48, 48), (24, 72, 72)
# float32 sums of a few thousand terms of size ~1: rounding stays far below this.
ATOL = 1e-4


def _members(tmp_path, seeds=(0, 1)):
    return [save_test_model(tmp_path / f"m{s}.safetensors", random_model(seed=s), CROP, PATCH) for s in seeds]


def test_an_ensemble_answers_with_the_mean_of_its_members(tmp_path, capsys):
    paths = _members(tmp_path)
    out = tmp_path / "ensemble.safetensors"
    assert main(["ensemble", *map(str, paths), "--out", str(out)]) == 0
    assert "an ensemble of 2 models" in capsys.readouterr().out
    ensemble, meta = load_model(out)
    members = [load_model(p)[0] for p in paths]
    assert isinstance(ensemble, Ensemble) and meta["ensemble"]["members"] == 2
    assert meta["ensemble"]["sources"] == [str(p) for p in paths] and "calibration" not in meta
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (3, 1, *CROP)).astype(np.float32))
    with torch.inference_mode():
        each = [m(x) for m in members]
        np.testing.assert_allclose(ensemble(x), (each[0] + each[1]) / 2, rtol=1e-6, atol=1e-6)
        # Its crop logit is the mean of its local-logit map, as for one network.
        local = local_logit_net(ensemble)(x)
        expected = (LocalLogitNet(members[0])(x) + LocalLogitNet(members[1])(x)) / 2
        np.testing.assert_allclose(local, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(local.mean(dim=(1, 2, 3)), ensemble(x).reshape(-1), atol=ATOL)

    volume = normalise_volume(blob_volume((40, 64, 80), [(20, 32, 40)]), "blob")
    mapper = make_mapper("fast", ensemble, CROP, (16, 16, 16))
    assert isinstance(mapper, MeanMapper)
    lmap = mapper(volume)
    grids = [make_mapper("fast", m, CROP, (16, 16, 16))(volume).logit for m in members]
    np.testing.assert_allclose(lmap.logit, (grids[0] + grids[1]) / 2, rtol=1e-6, atol=1e-6)
    assert lmap.bias == pytest.approx((members[0].fc.bias.item() + members[1].fc.bias.item()) / 2)
    fractions: list[float] = []
    mapper.map_with_fraction(volume, on_fraction=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and \
        any(0.4 < f < 0.6 for f in fractions)             # the second member starts half-way
    with pytest.raises(BlcamError, match="--method sliding: an ensemble model maps with --method fast only"):
        make_mapper("sliding", ensemble, CROP, (16, 16, 16))
    # The panel's time estimate counts every member's pass.
    geometry = Geometry((80, 64, 40), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    plans = [plan_detect(read_metadata(p), geometry) for p in (paths[0], out)]
    assert plans[1].reads_per_voxel == pytest.approx(2 * plans[0].reads_per_voxel)
    assert "an ensemble of 2 networks" in plans[1].describe() and "ensemble" not in plans[0].describe()


def test_detect_with_an_ensemble_of_equal_networks_is_the_network(tmp_path):
    """End to end through the CLI: the mean of two equal networks is that network, so every
    output of Detect (candidates after refinement, scores, heatmap) must be the same."""
    shape, lesion = (32, 64, 80), (16, 32, 48)
    geometry = Geometry(shape[::-1], (0.5, 0.5, 0.5), (-10.0, 4.0, 2.5), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(tmp_path / "case.nrrd", blob_volume(shape, [lesion], radius_vox=9), geometry)
    one = save_test_model(tmp_path / "one.safetensors", dark_blob_model(spread=True), CROP, PATCH)
    shutil.copy(one, tmp_path / "copy.safetensors")
    ens = tmp_path / "ens.safetensors"
    assert main(["ensemble", str(one), str(tmp_path / "copy.safetensors"), "--out", str(ens)]) == 0
    for model, out in ((one, "single"), (ens, "ensemble")):
        detect(model, [tmp_path / "case.nrrd"], tmp_path / out, DetectSettings(overlays=0, refine=2), progress=False)
    rows = {out: list(csv.DictReader((tmp_path / out / "case_candidates.csv").open()))
            for out in ("single", "ensemble")}
    assert len(rows["single"]) > 0 and rows["single"] == rows["ensemble"]
    heat = {out: sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / out / "case_heatmap.nrrd")))
            for out in ("single", "ensemble")}
    np.testing.assert_array_equal(heat["single"], heat["ensemble"])
    doc = json.loads((tmp_path / "ensemble" / "case_candidates.json").read_text(encoding="utf-8"))
    assert doc["model"] == str(ens)


def test_members_trained_differently_are_refused_by_name(tmp_path, capsys):
    a, b = _members(tmp_path)
    other = save_test_model(tmp_path / "crop.safetensors", random_model(seed=2), (16, 32, 32), PATCH)
    cases = [([a, other], f"{other}: 'crop' is [16, 32, 32] but {a} has [16, 48, 48]"),
             ([a, a], "given twice"),
             ([a], "needs 2 to 16 model files, got 1")]
    for members, message in cases:
        with pytest.raises(BlcamError, match=message.replace("[", r"\[").replace("]", r"\]")):
            write_ensemble(members, tmp_path / "e.safetensors")
    # Refinement must be the same for all: a point-supervised member beside a classifier.
    state, meta = load_file(str(b)), read_metadata(b)
    pointed = tmp_path / "pointed.safetensors"
    save_file(state, str(pointed), metadata={"blcam": json.dumps({**meta, "training": {"point_loss": 1.0}})})
    assert main(["ensemble", str(a), str(pointed), "--out", str(tmp_path / "e.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blcam ensemble: error:") and "training 'point_loss'" in err and len(err.splitlines()) == 1
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "e.pt")]) == 2
    assert "give a .safetensors path" in capsys.readouterr().err
    assert main(["ensemble", str(a), str(b), "--out", str(a)]) == 2
    assert "is one of the members" in capsys.readouterr().err
    assert read_metadata(a)["crop"] == list(CROP)                          # the member was not touched
    good = tmp_path / "good.safetensors"
    assert main(["ensemble", str(a), str(b), "--out", str(good)]) == 0
    assert main(["ensemble", str(good), str(a), "--out", str(tmp_path / "e2.safetensors")]) == 2
    assert "is an ensemble already" in capsys.readouterr().err
    before = good.read_bytes()
    assert main(["ensemble", str(b), str(a), "--out", str(good)]) == 2
    assert "exists; choose a new file, or pass --force" in capsys.readouterr().err and good.read_bytes() == before
    assert main(["ensemble", str(b), str(a), "--out", str(good), "--force"]) == 0
    assert read_metadata(good)["ensemble"]["sources"] == [str(b), str(a)]
    # A tampered member count is refused before any network is built.
    tampered = tmp_path / "tampered.safetensors"
    meta = read_metadata(good)
    save_file(load_file(str(good)), str(tampered),
              metadata={"blcam": json.dumps({**meta, "ensemble": {"members": 10 ** 6}})})
    with pytest.raises(BlcamError, match="'ensemble' has members 1000000; expected an integer from 2 to 16"):
        load_model(tampered)
