"""Patch export: patient-level splits, negatives only from healthy patients, resumability,
and crash safety (SIGKILL midway, rerun, byte-identical to an uninterrupted export)."""

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from _cohort_fixtures import small_cohort
from blcam.cohort import read_cohort
from blcam.patches.dataset import load_dataset
from blcam.patches.export import ExportSettings, export_dataset

SETTINGS = ExportSettings(patch=(6, 16, 16), negatives_per_volume=3, test_fraction=0.3, folds=3, seed=7)


def tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    return small_cohort(folder, n_healthy=10, n_lesion=10, shape=(10, 30, 30))


def test_splits_are_by_patient_and_negatives_from_healthy_patients(cohort, tmp_path):
    export_dataset(cohort, tmp_path / "ds", SETTINGS, progress=False)
    ds = load_dataset(tmp_path / "ds")
    where = defaultdict(set)
    for r in ds.records:
        where[r["patient"]].add((r["split"], r["fold"]))
        assert (r["split"] == "test") == (r["fold"] == -1)
    assert all(len(v) == 1 for v in where.values()), "a patient appears in two splits/folds"
    classes = read_cohort(cohort).patient_classes()
    for r in ds.records:
        assert r["patient_class"] == classes[r["patient"]]
        if r["kind"] == "negative":
            assert classes[r["patient"]] == "healthy" and r["label"] == 0
        else:
            assert r["label"] == 1
    # Stratified: both classes in the test split and in every fold.
    groups = defaultdict(set)
    for p, ((split, fold),) in where.items():
        groups[(split, fold)].add(classes[p])
    assert set(groups) == {("test", -1), ("train", 0), ("train", 1), ("train", 2)}
    assert all(g == {"healthy", "lesion"} for g in groups.values()), groups
    # Every lesion centre gave a patch; every healthy patient's volume gave K negatives.
    cohort_rows = read_cohort(cohort).rows
    assert sum(r["kind"] == "lesion" for r in ds.records) == sum(len(r.centres_lps) for r in cohort_rows)
    healthy_volumes = sum(classes[r.patient] == "healthy" for r in cohort_rows)
    assert sum(r["kind"] == "negative" for r in ds.records) == 3 * healthy_volumes
    patch = ds.load(ds.records[0])
    assert patch.dtype == np.uint8 and patch.shape == (6, 16, 16)


def test_parallel_export_equals_serial(cohort, tmp_path):
    export_dataset(cohort, tmp_path / "a", SETTINGS, jobs=1, progress=False)
    export_dataset(cohort, tmp_path / "b", SETTINGS, jobs=2, progress=False)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


def test_rerun_skips_finished_patches_and_refuses_other_settings(cohort, tmp_path):
    export_dataset(cohort, tmp_path / "ds", SETTINGS, progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "patches").iterdir()}
    export_dataset(cohort, tmp_path / "ds", SETTINGS, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "patches").iterdir()} == before
    from blcam.errors import BlcamError
    with pytest.raises(BlcamError, match="other settings"):
        export_dataset(cohort, tmp_path / "ds", ExportSettings(patch=(4, 8, 8)), progress=False)


def test_padding_is_recorded(tmp_path):
    from _cohort_fixtures import write_case, write_cohort_csv
    vol, ann, _ = write_case(tmp_path, "edge", (6, 20, 20), [(0, 2, 19)])
    write_cohort_csv(tmp_path / "c.csv", [("A", vol, "lesion", ann),
                                          ("B", write_case(tmp_path, "h", (6, 20, 20))[0], "healthy", "")])
    export_dataset(tmp_path / "c.csv", tmp_path / "ds", ExportSettings(patch=(4, 8, 8), negatives_per_volume=1,
                   test_fraction=0.0, folds=1), progress=False)
    ds = load_dataset(tmp_path / "ds")
    rec = next(r for r in ds.records if r["kind"] == "lesion")
    patch = ds.load(rec)
    # k 0 → rows -2,-1 outside; j 2 → j -2 outside... of the box k[-2,2), j[-2,6), i[15,23)
    expected = 1 - (2 * 6 * 5) / (4 * 8 * 8)
    assert rec["padded_fraction"] == pytest.approx(expected, abs=1e-6)
    assert np.all(patch[:2] == 0) and np.all(patch[:, :2] == 0) and np.all(patch[:, :, 5:] == 0)
    assert (rec["volume_k"], rec["volume_j"], rec["volume_i"]) == (6, 20, 20)
    lo, hi = ds.valid_box(rec)                    # the in-volume part: k[2,4), j[2,8), i[0,5)
    assert lo.tolist() == [2, 2, 0] and hi.tolist() == [4, 8, 5]
    negative = next(r for r in ds.records if r["kind"] == "negative")
    assert [v.tolist() for v in ds.valid_box(negative)] == [[0, 0, 0], [4, 8, 8]]


def test_sigkill_midway_then_rerun_is_byte_identical(tmp_path):
    cohort = small_cohort(tmp_path / "cohort", n_healthy=12, n_lesion=12, shape=(24, 64, 64), seed=3)
    settings = ExportSettings(patch=(16, 48, 48), negatives_per_volume=8, test_fraction=0.3, folds=3, seed=1)
    export_dataset(cohort, tmp_path / "reference", settings, progress=False)

    killed = tmp_path / "killed"
    package_root = str(Path(__file__).resolve().parents[2] / "BreastLesionCAM")
    code = (f"import sys; sys.path.insert(0, {package_root!r}); "
            "from blcam.patches.export import ExportSettings, export_dataset; "
            f"export_dataset({str(cohort)!r}, {str(killed)!r}, ExportSettings(patch=(16, 48, 48), "
            "negatives_per_volume=8, test_fraction=0.3, folds=3, seed=1), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    total = len(list((tmp_path / "reference" / "patches").iterdir()))
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        done = list((killed / "patches").glob("*.npy")) if (killed / "patches").exists() else []
        if len(done) >= total // 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "export finished before it could be killed; make the test cohort larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.csv").exists()
    assert len(list((killed / "patches").glob("*.npy"))) < total

    export_dataset(cohort, killed, settings, progress=False)
    assert tree_bytes(killed) == tree_bytes(tmp_path / "reference")
