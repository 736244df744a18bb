"""Bad input as a new user gives it (issue 9): one table of cases, each run through ``blcam``.

A case passes only when the command exits non-zero with exactly one line on stderr that
names the culprit, no traceback anywhere, no temporary or half-written file left behind,
and every output that existed before byte-identical afterwards. Read-only folders and full
disks are real (bind mounts, ``chattr``, tmpfs: the ``faults`` fixture, :mod:`_fault_fixtures`),
not monkeypatched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tqdm import std as tqdm_std

from _cam_fixtures import blob_volume, random_model, save_test_model
from _cohort_fixtures import make_geometry, small_cohort, write_case, write_cohort_csv
from _training_fixtures import (
    blob_dataset,
    one_thread,  # noqa: F401 (autouse)
    trained_run,
)
from blcam.cli import main
from blcam.io.volume import write_volume
from blcam.training.checkpoint import LAST

PATCH = ["--patch", "4", "8", "8"]
TRAIN = ["--arch", "resnet10", "--widen", "0.25", "--epochs", "1", "--batch-size", "8", "--crop", "8", "32", "32",
         "--fold", "0", "--device", "cpu", "--workers", "0"]


@dataclass
class Spec:
    """What a setup built: the command, the files that must survive unchanged, the folder
    whose leftovers must all be complete, and outputs that must not appear."""

    argv: list[str]
    keep: list[Path] = field(default_factory=list)
    out: Path | None = None
    absent: list[Path] = field(default_factory=list)


class World:
    """Inputs shared by the cases, built once per module (tiny: the whole file takes seconds)."""

    def __init__(self, root: Path, factory):
        self.root, self._factory = root, factory
        self.cohort = small_cohort(root / "cohort", n_healthy=3, n_lesion=3, shape=(8, 20, 20))
        self.model = save_test_model(root / "model.safetensors", random_model(), crop=(8, 16, 16), patch=(12, 24, 24))
        self.volume = root / "volume.nrrd"
        write_volume(self.volume, blob_volume((12, 24, 24), [(6, 12, 12)], radius_vox=3), make_geometry((12, 24, 24)))

    def dataset(self) -> Path:
        return blob_dataset(self._factory)

    def run_copy(self, dest: Path) -> Path:
        """A private copy of the trained run (the shared one must stay untouched)."""
        return Path(shutil.copytree(trained_run(self._factory), dest))

    def cohort_with(self, tmp: Path, *rows) -> Path:
        """The base cohort plus ``rows``, as a CSV in ``tmp`` with absolute paths."""
        base = self.cohort.parent
        lines = self.cohort.read_text(encoding="utf-8").splitlines()[1:]
        old = [[c if n < 1 or not c or n == 2 else str(base / c) for n, c in enumerate(ln.split(","))] for ln in lines]
        return write_cohort_csv(tmp / "cohort.csv", [*old, *rows])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("world"), tmp_path_factory)


@pytest.fixture(autouse=True)
def quiet_bars(monkeypatch):
    """Progress bars off: stderr then holds only what the command reports (bars are not errors)."""
    init = tqdm_std.tqdm.__init__
    monkeypatch.setattr(tqdm_std.tqdm, "__init__", lambda self, *a, **k: init(self, *a, **{**k, "disable": True}))


# -- setups: each builds one bad input in tmp ----------------------------------------------
def _annotation(tmp: Path, world: World, name: str, content: bytes) -> Spec:
    vol, _, _ = write_case(tmp, "A", (8, 20, 20))
    (tmp / name).write_bytes(content)
    csv = world.cohort_with(tmp, ("NEW", str(tmp / vol), "lesion", str(tmp / name)))
    return Spec(["export", str(csv), "--out", str(tmp / "out"), *PATCH], absent=[tmp / "out"])


def _markups(points_field) -> bytes:
    return json.dumps({"markups": points_field}).encode()


def _cp(cps) -> bytes:
    return _markups([{"coordinateSystem": "LPS", "controlPoints": cps}])


def _file_out(command: str) -> Callable:
    def setup(tmp, world, faults):
        (tmp / "out").write_text("a file\n", encoding="utf-8")
        argv = {"export": ["export", str(world.cohort), *PATCH],
                "train": ["train", str(world.dataset()), *TRAIN],
                "detect": ["detect", str(world.model), str(world.volume), "--overlays", "0"]}[command]
        return Spec([*argv, "--out", str(tmp / "out")], keep=[tmp / "out"])
    return setup


def _read_only(command: str) -> Callable:
    def setup(tmp, world, faults):
        if command in ("resume", "evaluate"):
            run = world.run_copy(tmp / "run")
            keep = [run / LAST, run / "model.safetensors", run / "history.csv"]
            faults.read_only(run)
            argv = (["train", str(world.dataset()), "--out", str(run), "--resume", *TRAIN, "--epochs", "5"]
                    if command == "resume" else ["evaluate", str(run), str(world.dataset()), "--device", "cpu"])
            return Spec(argv, keep=keep, out=run)
        ro = faults.read_only(tmp / "ro")
        out = ro / "out"
        argv = {"export": ["export", str(world.cohort), *PATCH], "train": ["train", str(world.dataset()), *TRAIN],
                "detect": ["detect", str(world.model), str(world.volume), "--overlays", "0"],
                "phantom": ["phantom", "--patients", "1", "--shape", "4", "24", "24", "--no-progress"]}[command]
        argv = [*argv, str(out)] if command == "phantom" else [*argv, "--out", str(out)]
        return Spec(argv, absent=[out])
    return setup


def _disk_full(command: str) -> Callable:
    def setup(tmp, world, faults):
        disk = faults.small_disk(tmp / "disk", "64k" if command != "detect" else "8k")
        if command == "export":
            cohort = small_cohort(tmp / "c", n_healthy=3, n_lesion=3, shape=(8, 20, 20))
            return Spec(["export", str(cohort), "--out", str(disk / "out"), "--patch", "8", "20", "20",
                         "--negatives-per-volume", "8"], out=disk, absent=[disk / "out" / "manifest.csv"])
        if command == "train":
            return Spec(["train", str(world.dataset()), "--out", str(disk / "run"), *TRAIN], out=disk)
        (disk / "detections.csv").write_text("name\nearlier\n", encoding="utf-8")
        return Spec(["detect", str(world.model), str(world.volume), "--out", str(disk), "--overlays", "0"],
                    keep=[disk / "detections.csv"], out=disk)
    return setup


def _tampered_model(meta: str) -> Callable:
    def setup(tmp, world, faults):
        save_file(load_file(str(world.model)), str(tmp / "m.safetensors"), metadata={"blcam": meta})
        return Spec(["detect", str(tmp / "m.safetensors"), str(world.volume), "--out", str(tmp / "det")],
                    absent=[tmp / "det"])
    return setup


def _bad_resume(content: Callable[[Path], None]) -> Callable:
    def setup(tmp, world, faults):
        run = world.run_copy(tmp / "run")
        content(run / LAST)
        return Spec(["train", str(world.dataset()), "--out", str(run), "--resume", *TRAIN],
                    keep=[run / "model.safetensors", run / LAST, run / "history.csv"])
    return setup


class _Hostile:
    def __reduce__(self):
        return (print, ("pwned",))


def _evaluate_detection(tmp, world, faults, row=None, masks=None) -> Spec:
    det = tmp / "det"
    det.mkdir()
    (det / "v_candidates.json").write_text(json.dumps({"candidates": []}), encoding="utf-8")
    from blcam.detect.outputs import SUMMARY_COLUMNS
    cells = {"name": "v", "volume": world.volume, "volume_score": 0.5, "candidates": 0, "method": "fast",
             "seconds": 1, "heatmap": "v_heatmap.nrrd", "candidates_json": "v_candidates.json", "non_finite_voxels": 0}
    good = ",".join(str(cells.get(c, "")) for c in SUMMARY_COLUMNS)   # a valid row, whatever the columns
    header = ",".join(SUMMARY_COLUMNS)
    (det / "detections.csv").write_text("\n".join([header, good, *([row] if row else [])]) + "\n", encoding="utf-8")
    csv = write_cohort_csv(tmp / "c.csv", [("P", str(world.volume), "healthy", "")])
    return Spec(["evaluate-detection", str(det), str(csv), *(["--masks", str(masks)] if masks else [])],
                keep=[det / "detections.csv"], absent=[det / "localisation.json"])


def _calibrate(tmp, world, faults, extra=(), candidates=None) -> Spec:
    """``blcam calibrate`` on the one-volume folder of :func:`_evaluate_detection`."""
    spec = _evaluate_detection(tmp, world, faults)
    det, csv = Path(spec.argv[1]), Path(spec.argv[2])
    if candidates is not None:
        (det / "v_candidates.json").write_text(json.dumps({"candidates": candidates}), encoding="utf-8")
    model = tmp / "model.safetensors"
    shutil.copy(world.model, model)
    return Spec(["calibrate", str(model), str(det), str(csv), *extra], keep=[model],
                absent=[det / "calibration.json"])


def _extra_row(tmp: Path, world: World, label: str, lesions=(), array=None) -> Path:
    """The base cohort plus one new volume (``array`` or noise, with ``lesions``) as ``label``."""
    vol, ann, _ = write_case(tmp, "new", (8, 20, 20), lesions)
    if array is not None:
        write_volume(tmp / vol, array, make_geometry(array.shape))
    return world.cohort_with(tmp, ("NEW", str(tmp / vol), label, str(tmp / ann) if ann else ""))


def _export_of(make_csv: Callable | None, extra=(), partial: bool = False) -> Callable:
    def setup(tmp, world, faults):
        csv = make_csv(tmp, world) if make_csv else world.cohort
        out = tmp / "out"
        return Spec(["export", str(csv), "--out", str(out), *PATCH, *extra], out=out if partial else None,
                    absent=[out / "manifest.csv"] if partial else [out])
    return setup


CASES = [
    ("mrk-markups-not-objects", lambda t, w, f: _annotation(t, w, "a.mrk.json", _markups([5])),
     ["a.mrk.json", "markup 0"]),
    ("mrk-control-point-text", lambda t, w, f: _annotation(t, w, "a.mrk.json", _cp(["x"])),
     ["a.mrk.json", "control point 0"]),
    ("mrk-control-points-object", lambda t, w, f: _annotation(t, w, "a.mrk.json", _cp({})),
     ["a.mrk.json", "controlPoints"]),
    ("mrk-position-text", lambda t, w, f: _annotation(t, w, "a.mrk.json", _cp([{"position": ["a", "b", "c"]}])),
     ["a.mrk.json", "control point 0", "'a'"]),
    ("fcsv-two-coordinates", lambda t, w, f: _annotation(t, w, "a.fcsv", b"# CoordinateSystem = LPS\n1,2.0,3.0\n"),
     ["a.fcsv", "line 2"]),
    ("fcsv-latin1", lambda t, w, f: _annotation(t, w, "a.fcsv", "# Läsion\n1,2,3,4\n".encode("latin-1")),
     ["a.fcsv", "UTF-8"]),
    ("points-csv-latin1", lambda t, w, f: _annotation(t, w, "a.csv", "x,y,z,note\n1,2,3,Läsion\n".encode("latin-1")),
     ["a.csv", "UTF-8"]),
    ("export-out-is-file", _file_out("export"), ["--out", "is a file"]),
    ("train-out-is-file", _file_out("train"), ["--out", "is a file"]),
    ("detect-out-is-file", _file_out("detect"), ["--out", "is a file"]),
    ("export-read-only", _read_only("export"), ["ro/out"]),
    ("train-read-only", _read_only("train"), ["ro/out"]),
    ("train-resume-read-only", _read_only("resume"), ["run/"]),
    ("detect-read-only", _read_only("detect"), ["ro/out"]),
    ("evaluate-read-only", _read_only("evaluate"), ["run/evaluation_test"]),
    ("phantom-read-only", _read_only("phantom"), ["ro/out"]),
    ("export-disk-full", _disk_full("export"), ["disk/out", "no space left on device"]),
    ("train-disk-full", _disk_full("train"), ["disk/run", "no space left on device"]),
    ("detect-disk-full", _disk_full("detect"), ["disk/", "no space left on device"]),
    ("model-meta-not-json", _tampered_model("{not json"), ["m.safetensors", "not JSON"]),
    ("model-meta-list", _tampered_model("[1, 2]"), ["m.safetensors", "list"]),
    ("model-meta-no-arch", _tampered_model('{"format": "blcam-model-v1", "stem": "paper"}'),
     ["m.safetensors", "'arch'"]),
    ("model-meta-widen-text", _tampered_model('{"format": "blcam-model-v1", "arch": "resnet10", "stem": "paper", '
                                              '"widen": "abc"}'), ["m.safetensors", "'widen'", "abc"]),
    ("model-meta-widen-huge", _tampered_model('{"format": "blcam-model-v1", "arch": "resnet10", "stem": "paper", '
                                              '"widen": 1e6}'), ["m.safetensors", "'widen'", "1000000"]),
    ("resume-text-last-pt", _bad_resume(lambda p: p.write_text("not a checkpoint\n", encoding="utf-8")),
     [LAST, "not a readable checkpoint"]),
    ("resume-hostile-last-pt", _bad_resume(lambda p: torch.save({"x": _Hostile()}, p)), [LAST, "refused to load"]),
    ("evaluate-detection-garbage-row", lambda t, w, f: _evaluate_detection(t, w, f, row="x,y,abc"),
     ["detections.csv", "row 3"]),
    ("evaluate-detection-missing-masks", lambda t, w, f: _evaluate_detection(t, w, f, masks=t / "nomasks"),
     ["--masks", "nomasks"]),
    # A failed calibration names what is missing and leaves the model file as it was.
    ("calibrate-no-hits", lambda t, w, f: _calibrate(t, w, f), ["candidate scores", "all 0 are misses"]),
    ("calibrate-report-not-json", lambda t, w, f: _calibrate(t, w, f, ["--report", str(t / "fit.txt")]),
     ["--report", "fit.txt", ".json"]),
    ("calibrate-no-logits", lambda t, w, f: _calibrate(t, w, f, candidates=[{"label": "lesion-1", "score": 0.5,
                                                                             "x": 0, "y": 0, "z": 0}]),
     ["det", "raw logits", "Detect again"]),
    ("healthy-with-annotation", _export_of(lambda t, w: _extra_row(t, w, "healthy", [(4, 10, 10)])),
     ["row 11", "new.nrrd", "healthy volume", "annotation", "label it lesion"]),
    ("healthy-volume-smaller-than-patch", _export_of(None, ["--patch", "4", "8", "32"]),
     ["row 2", "P000_L.nrrd", "8 20 20", "4 8 32"]),
    ("too-many-folds", _export_of(None, ["--folds", "10"]), ["--folds 10", "2 healthy and 2 lesion", "--folds 2"]),
    # Found while reading pixels: earlier volumes' patches stay (complete, for a resumed run), no manifest.
    ("all-nan-volume", _export_of(lambda t, w: _extra_row(t, w, "healthy", array=np.full((8, 20, 20), np.nan)),
                                  partial=True),
     ["new.nrrd", "row 11", "NaN"]),
]


def _snapshot(paths) -> dict:
    return {p: p.read_bytes() for p in paths}


def _assert_complete(folder: Path) -> None:
    """Every file left is whole: no temporaries, and each parses as what its name says."""
    assert not [p for p in folder.rglob("*") if ".tmp-" in p.name], "temporary file left"
    for p in folder.rglob("*"):
        if p.suffix == ".npy":
            np.load(p)
        elif p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".pt":
            torch.load(p, weights_only=True)


@pytest.mark.parametrize("case_id,setup,culprit", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case_id, setup, culprit, tmp_path, world, faults, capsys):
    spec = setup(tmp_path, world, faults)
    before = _snapshot(spec.keep)
    rc = main(spec.argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc != 0, f"{case_id}: exit 0\n{err}"
    assert len(lines) == 1 and lines[0].startswith(f"blcam {spec.argv[0]}: error:"), err
    assert all(c in lines[0] for c in culprit), (culprit, lines[0])
    assert "Traceback" not in out + err and "weights_only" not in err
    assert _snapshot(spec.keep) == before, "an earlier output changed"
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name], "temporary file left"
    assert not [p for p in spec.absent if p.exists()], "partial output left"
    if spec.out is not None:
        _assert_complete(spec.out)


# -- behaviour, not just errors --------------------------------------------------------------
def _nan_volume(path: Path) -> int:
    """A float volume with a blob, a few NaN and ±inf voxels; returns how many are non-finite."""
    arr = blob_volume((12, 24, 24), [(6, 12, 12)], radius_vox=3).astype(np.float32)
    arr[0, :2, :2], arr[5, 5, 5], arr[7, 3, 9] = np.nan, np.inf, -np.inf
    write_volume(path, arr, make_geometry((12, 24, 24)))
    return 6


def test_nan_voxels_are_counted_and_do_not_blacken(tmp_path, world, capsys):
    bad = _nan_volume(tmp_path / "nan.nrrd")
    write_volume(tmp_path / "zero.nrrd", np.zeros((12, 24, 24), np.float32), make_geometry((12, 24, 24)))
    csv = world.cohort_with(tmp_path, ("NAN", str(tmp_path / "nan.nrrd"), "healthy", ""))
    assert main(["export", str(csv), "--out", str(tmp_path / "ds"), *PATCH]) == 0
    assert f"nan.nrrd: {bad} of {12 * 24 * 24} voxels are NaN or infinite" in capsys.readouterr().err
    from blcam.patches.dataset import load_dataset
    ds = load_dataset(tmp_path / "ds")
    recs = [r for r in ds.records if r["patient"] == "NAN"]
    assert recs and all(r["non_finite_voxels"] == str(bad) for r in recs)
    assert all(np.isfinite(r["grey_low"]) and np.isfinite(r["grey_high"]) for r in recs)
    assert all(ds.load(r).max() > 0 for r in recs), "a patch of the NaN volume is black"

    argv = ["detect", str(world.model), str(tmp_path / "nan.nrrd"), str(tmp_path / "zero.nrrd"), "--overlays", "0"]
    assert main([*argv, "--out", str(tmp_path / "det")]) == 0
    assert f"{bad} of {12 * 24 * 24} voxels" in capsys.readouterr().err
    import csv as csv_module
    rows = {r["name"]: r for r in csv_module.DictReader((tmp_path / "det" / "detections.csv").open(encoding="utf-8"))}
    assert rows["nan"]["non_finite_voxels"] == str(bad) and rows["zero"]["non_finite_voxels"] == "0"
    assert rows["nan"]["volume_score"] != rows["zero"]["volume_score"]
    from blcam.intensity import normalise_volume
    from blcam.io.volume import read_volume
    raw, _ = read_volume(tmp_path / "nan.nrrd")
    stored = normalise_volume(raw)
    assert np.all(stored[~np.isfinite(raw)] == 0) and stored[np.isfinite(raw)].max() == 255


def test_a_last_batch_of_one_trains(tmp_path, world):
    """Crop 8×16×16 leaves a 1×1×1 feature map: a batch of one would break BatchNorm."""
    from blcam.patches.dataset import load_dataset
    from blcam.training.data import batch_slices
    from blcam.training.loop import split_records
    n = len(split_records(load_dataset(world.dataset()), 0)[0])
    assert batch_slices(n, n - 1, merge_single=True) == [slice(0, n)]
    assert batch_slices(n, n - 1) == [slice(0, n - 1), slice(n - 1, n)]
    argv = ["train", str(world.dataset()), "--out", str(tmp_path / "run"), *TRAIN]
    argv[argv.index("--batch-size") + 1] = str(n - 1)
    argv[argv.index("--crop") + 1:argv.index("--crop") + 4] = ["8", "16", "16"]
    assert main(argv) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_detect_and_scoring_accept_an_all_healthy_cohort(tmp_path, world, capsys):
    csv = write_cohort_csv(tmp_path / "healthy.csv", [("P", str(world.volume), "healthy", "")])
    assert main(["detect", str(world.model), str(csv), "--out", str(tmp_path / "det"), "--overlays", "0"]) == 0
    assert main(["evaluate-detection", str(tmp_path / "det"), str(csv)]) == 0, capsys.readouterr().err
    assert main(["export", str(csv), "--out", str(tmp_path / "ds")]) == 2
    assert "needs both healthy and lesion patients" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_unless_debug(tmp_path, monkeypatch, capsys):
    import blcam.cli.cmd_phantom as cmd

    def boom(args):
        raise ZeroDivisionError("division by zero in a bug")
    monkeypatch.setattr(cmd, "run", boom)
    assert main(["phantom", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["blcam phantom: internal error: ZeroDivisionError: division by zero in a bug "
                                "(rerun with 'blcam --debug ...' for the traceback)"]
    assert main(["--debug", "phantom", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1].startswith("blcam phantom: internal error:")


def test_atomic_writes_follow_the_umask(tmp_path, world):
    """safetensors writes its file 0600; every finished output gets the umask's mode instead."""
    from blcam.io.atomic import write_text_atomic
    (tmp_path / "plain").write_text("", encoding="utf-8")
    want = (tmp_path / "plain").stat().st_mode & 0o777
    save_test_model(tmp_path / "m.safetensors", random_model())
    write_text_atomic(tmp_path / "t.txt", "x")
    assert [(tmp_path / f).stat().st_mode & 0o777 for f in ("m.safetensors", "t.txt")] == [want, want]
