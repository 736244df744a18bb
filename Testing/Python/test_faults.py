"""Concurrency and faults: folder locks, resume identity, orphaned workers, detect resume.

Each test provokes the fault itself (a second command while the first runs, a SIGKILL, a
rerun after a changed input) and checks what the user would see.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from _cam_fixtures import blob_volume, dark_blob_model, save_test_model
from _training_fixtures import (
    SETTINGS,
    SUBPROCESS_ENV,
    blob_dataset,
    one_thread,  # noqa: F401 (autouse)
    tiny_config,
    trained_run,
)
from blcam.cli import main
from blcam.errors import BlcamError
from blcam.io.locks import LOCK_NAME, FolderBusy, folder_lock
from blcam.io.volume import Geometry, write_volume
from blcam.patches.export import ExportSettings, export_dataset
from blcam.training import train_model
from blcam.training.checkpoint import LAST, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, **SUBPROCESS_ENV, "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT / "BreastLesionCAM"), os.environ.get("PYTHONPATH", "")])}
TINY = ["--arch", "resnet10", "--widen", "0.25", "--crop", "8", "32", "32", "--batch-size", "8", "--fold", "0",
        "--device", "cpu", "--workers", "0"]


def _blcam(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blcam", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", env=ENV, timeout=timeout)


# -- locks -------------------------------------------------------------------------------
def test_lock_semantics_shared_readers_one_writer_and_no_leftovers(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    with folder_lock(folder, shared=True), folder_lock(folder, shared=True):
        with pytest.raises(FolderBusy, match=rf"{folder}: in use by another blcam command \(pid {os.getpid()} on "):
            with folder_lock(folder, purpose="exporting there"):
                pass
    with folder_lock(folder, purpose="exporting there"):
        holder = (folder / LOCK_NAME).read_text(encoding="utf-8")
        assert holder.startswith(f"pid {os.getpid()} on ") and "started " in holder
        with pytest.raises(FolderBusy, match="before training on it"):
            with folder_lock(folder, shared=True, purpose="training on it"):
                pass
    assert list(folder.iterdir()) == []             # the lock file goes with its last holder
    # A shared lock never creates a dataset folder; an exclusive one removes the folder it made.
    with folder_lock(tmp_path / "missing", shared=True):
        assert not (tmp_path / "missing").exists()
    with folder_lock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / LOCK_NAME).is_file()
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(BlcamError, match="file: exists and is not a folder"):
        with folder_lock(tmp_path / "file"):
            pass


class _FakeMsvcrt:
    """Windows byte-range locks, emulated in-process: each descriptor plays one process."""

    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self):
        self.owner: dict[tuple, int] = {}

    def _keys(self, fd, nbytes):
        st, pos = os.fstat(fd), os.lseek(fd, 0, os.SEEK_CUR)
        return [(st.st_dev, st.st_ino, pos + n) for n in range(nbytes)]

    def locking(self, fd, mode, nbytes):
        keys = self._keys(fd, nbytes)
        if mode == self.LK_UNLCK:
            for k in keys:
                self.owner.pop(k, None)
        elif any(k in self.owner for k in keys):        # Windows: even the holder's own bytes
            raise OSError(36, "Resource deadlock avoided")
        else:
            self.owner.update(dict.fromkeys(keys, fd))

    def release_all(self, fd):
        for k in [k for k, v in self.owner.items() if v == fd]:
            del self.owner[k]


def test_windows_fallback_gives_the_same_reader_writer_semantics(tmp_path, monkeypatch):
    fake, real_close = _FakeMsvcrt(), os.close
    monkeypatch.setitem(sys.modules, "fcntl", None)          # import fcntl → ImportError
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    monkeypatch.setattr(os, "close", lambda fd: (fake.release_all(fd), real_close(fd)))
    folder = tmp_path / "data"
    folder.mkdir()
    with folder_lock(folder, shared=True), folder_lock(folder, shared=True):
        with pytest.raises(FolderBusy, match=rf"pid {os.getpid()} on "):    # holder text stays readable
            with folder_lock(folder):
                pass
    with folder_lock(folder):
        with pytest.raises(FolderBusy):
            with folder_lock(folder, shared=True):
                pass
        with pytest.raises(FolderBusy):
            with folder_lock(folder):
                pass
    assert not (folder / LOCK_NAME).exists()                 # the last holder found itself alone
    with folder_lock(folder):                                # everything was released
        pass
    assert fake.owner == {}


def test_second_training_into_a_running_run_is_refused(tmp_path_factory, tmp_path):
    """While this process trains into RUN, ``blcam train --out RUN`` exits 2 naming it; RUN
    ends with exactly this run's history, checkpoint and model."""
    data, run, cfg = blob_dataset(tmp_path_factory), tmp_path / "run", tiny_config(epochs=3)
    second = {}

    def on_epoch(rec):
        if rec["epoch"] == 1:
            second["done"] = _blcam("train", data, "--out", run, "--epochs", 3, *TINY)
            second["resume"] = _blcam("train", data, "--out", run, "--epochs", 3, "--resume", *TINY)

    train_model(data, run, cfg, progress=False, on_epoch=on_epoch)
    for key in ("done", "resume"):
        done = second[key]
        assert done.returncode == 2, done.stderr[-2000:]
        err = done.stderr.strip().splitlines()[-1]
        assert err.startswith(f"blcam train: error: {run}: in use by another blcam command (pid {os.getpid()} on ")
        assert "wait for it to finish before training into it" in err
    history = [json.loads(ln) for ln in (run / "history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    state = load_checkpoint(run / LAST)
    assert state["epoch"] == 3 and [r["epoch"] for r in state["history"]] == [1, 2, 3]
    assert state["history"] == history
    from blcam.model import read_metadata
    assert read_metadata(run / "model.safetensors")["training"]["best_epoch"] == state["best"]["epoch"]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "curves.png", "history.csv", "history.jsonl",
                                                     LAST, "model.safetensors"]


# -- resume identity -----------------------------------------------------------------------
def test_resume_onto_another_dataset_is_refused_and_old_checkpoints_still_resume(tmp_path_factory, tmp_path,
                                                                                 capsys):
    data, run = blob_dataset(tmp_path_factory), trained_run(tmp_path_factory)
    other = tmp_path / "other"
    export_dataset(data.parent / "cohort" / "cohort.csv", other,
                   ExportSettings(SETTINGS.patch, SETTINGS.negatives_per_volume, SETTINGS.test_fraction,
                                  SETTINGS.folds, seed=5), progress=False)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir()}
    with pytest.raises(BlcamError) as err:
        train_model(other, run, tiny_config(epochs=6), progress=False, resume=True)
    msg = str(err.value)
    assert msg.startswith(f"{run / LAST}: the run was trained on the dataset {data.resolve()} (sha256 ")
    assert f"not on {other.resolve()} (sha256 " in msg
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir()} == before
    # The checkpoint names the dataset by content hash (the path is kept for messages).
    state = load_checkpoint(run / LAST)
    assert state["dataset"]["path"] == str(data.resolve()) and len(state["dataset"]["sha256"]) == 64

    # A checkpoint from before the identity was recorded resumes, with a warning.
    old = tmp_path / "old"
    old.mkdir()
    for p in run.iterdir():
        (old / p.name).write_bytes(p.read_bytes())
    del state["dataset"]
    torch.save(state, old / LAST)
    capsys.readouterr()
    train_model(data, old, tiny_config(epochs=5), progress=False, resume=True)
    assert f"{old / LAST} does not record its dataset" in capsys.readouterr().err
    resumed = load_checkpoint(old / LAST)
    assert resumed["epoch"] == 5 and resumed["dataset"] == load_checkpoint(run / LAST)["dataset"]


# -- exports: lock against a running export, orphaned workers ----------------------------------
@pytest.fixture(scope="module")
def slow_cohort(tmp_path_factory) -> Path:
    """Volumes big enough that ``export --jobs 2`` runs for seconds: one 16 MB volume, hard-linked
    under many names (the cohort refuses the same path twice, not the same bytes)."""
    root = tmp_path_factory.mktemp("slow")
    shape = (64, 256, 256)
    geom = Geometry(size=shape[::-1], spacing=(0.3, 0.3, 0.6), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    write_volume(root / "base.nrrd", np.random.default_rng(0).normal(100, 10, shape).astype(np.float32), geom)
    point = geom.index_to_lps(np.array([[128.0, 128.0, 32.0]]))[0]
    (root / "lesion.csv").write_text("x,y,z\n" + ",".join(f"{v:.4f}" for v in point) + "\n", encoding="utf-8")
    rows = []
    for p in range(40):
        os.link(root / "base.nrrd", root / f"V{p:02d}.nrrd")
        lesion = p % 2 == 0
        rows.append([f"P{p:02d}", f"V{p:02d}.nrrd", "lesion" if lesion else "healthy", "lesion.csv" if lesion else ""])
    with (root / "cohort.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient", "volume", "label", "annotation"])
        w.writerows(rows)
    return root / "cohort.csv"


def _export_with_workers(cohort: Path, out: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """Start ``blcam export --jobs 2`` and wait until its two pool workers exist."""
    proc = subprocess.Popen([sys.executable, "-m", "blcam", "export", str(cohort), "--out", str(out), "--jobs", "2",
                             "--patch", "8", "32", "32"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        children = parent.children(recursive=True)
        if len(children) >= 2:
            return proc, children
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail("export ended before its workers could be seen; make the slow cohort larger")


def _gone(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_export_and_training_are_refused_while_an_export_writes(slow_cohort, tmp_path, tmp_path_factory, capsys):
    out = tmp_path / "patches"
    proc, children = _export_with_workers(slow_cohort, out)
    try:
        assert main(["export", str(slow_cohort), "--out", str(out), "--patch", "8", "32", "32"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"blcam export: error: {out}: in use by another blcam command (pid {proc.pid} on ")
        assert "export" in err and "wait for it to finish before exporting there" in err
        with pytest.raises(FolderBusy, match=rf"pid {proc.pid} on .*before training on it"):
            train_model(out, tmp_path / "run", tiny_config(), progress=False)
        assert not (tmp_path / "run").exists()
        assert proc.poll() is None, "the first export ended during the test; make the slow cohort larger"
    finally:
        proc.kill()
        proc.wait()
        _reap(children, 5)
    # Its death (and its workers', which share the lock's descriptor) releases the lock: no
    # stale lock is left to clean up, the folder can be claimed again.
    deadline = time.time() + 5
    while True:
        try:
            with folder_lock(out):
                break
        except FolderBusy:
            assert time.time() < deadline, "the killed export's lock outlived it"
            time.sleep(0.05)


def test_sigkilled_export_takes_its_workers_with_it(slow_cohort, tmp_path):
    proc, children = _export_with_workers(slow_cohort, tmp_path / "patches")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive = _reap(children, 5)
    assert not alive, f"pool workers {alive} outlived their killed parent {proc.pid}"


def test_worker_without_pdeathsig_still_notices_its_parent_died(tmp_path):
    """The portable fallback alone (no prctl): a worker's watcher thread ends it within ~1 s."""
    code = ("import multiprocessing as mp, os, threading, time\n"
            "from blcam import workers\n"
            "def child(ppid):\n"
            "    threading.Thread(target=workers._watch_parent, args=(ppid,), daemon=True).start()\n"
            "    time.sleep(600)\n"
            "if __name__ == '__main__':\n"
            "    mp.get_context('fork').Process(target=child, args=(os.getpid(),)).start()\n"
            "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 30
    while not (children := parent.children()) and time.time() < deadline:
        time.sleep(0.02)
    assert children, "the test's child process never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive = _reap(children, 5)
    assert not alive, f"process {alive} outlived its killed parent {proc.pid}"


def _reap(processes: list[psutil.Process], seconds: float) -> list[int]:
    """Wait up to ``seconds`` for ``processes`` to end; kill and return the pids still alive."""
    deadline = time.time() + seconds
    while time.time() < deadline and not all(_gone(p) for p in processes):
        time.sleep(0.05)
    alive = [p.pid for p in processes if not _gone(p)]
    for p in processes:                              # never leave them behind for the next test
        if p.pid in alive:
            p.kill()
    return alive


# -- detect ---------------------------------------------------------------------------------
def _state(out: Path, names) -> dict:
    """(inode, mtime) of each volume's heatmap: changes exactly when the file is rewritten."""
    return {n: ((out / f"{n}_heatmap.nrrd").stat().st_ino, (out / f"{n}_heatmap.nrrd").stat().st_mtime_ns)
            for n in names}


def test_detect_rerun_skips_finished_volumes_and_redoes_changed_ones(tmp_path, capsys):
    shape = (16, 48, 48)
    geom = Geometry(size=shape[::-1], spacing=(0.4, 0.4, 0.8), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    for n, name in enumerate("abc"):
        write_volume(tmp_path / f"{name}.nrrd", blob_volume(shape, [(8, 24, 24)], radius_vox=6, seed=n), geom)
    model = save_test_model(tmp_path / "m.safetensors", dark_blob_model(), crop=(8, 32, 32), patch=(12, 48, 48))
    out = tmp_path / "out"
    vols = [str(tmp_path / f"{n}.nrrd") for n in "abc"]

    def run(*extra, volumes=vols):
        capsys.readouterr()
        assert main(["detect", str(model), *volumes, "--out", str(out), "--device", "cpu", "--overlays", "0",
                     *extra]) == 0
        return capsys.readouterr().err, list(csv.DictReader((out / "detections.csv").open(encoding="utf-8")))

    run(volumes=vols[:2])                            # as if killed after two of the three volumes
    first = _state(out, "ab")
    err, rows = run()
    assert "skipped 2 of 3 volume(s) finished by an earlier run" in err
    assert _state(out, "ab") == first
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    done = _state(out, "abc")
    err, again = run()
    assert "skipped 3 of 3" in err and _state(out, "abc") == done and again == rows

    # A changed setting, model or volume is recomputed; so is a volume whose heatmap is gone.
    err, _ = run("--nms-mm", "5")
    assert "skipped" not in err and all(_state(out, "abc")[n] != done[n] for n in "abc")
    done = _state(out, "abc")
    save_test_model(model, dark_blob_model(bias=-0.3), crop=(8, 32, 32), patch=(12, 48, 48))
    err, _ = run("--nms-mm", "5")
    assert "skipped" not in err and all(_state(out, "abc")[n] != done[n] for n in "abc")
    done = _state(out, "abc")
    write_volume(tmp_path / "a.nrrd", blob_volume(shape, [(8, 20, 20)], radius_vox=6, seed=9), geom)
    (out / "b_heatmap.nrrd").unlink()
    err, rows = run("--nms-mm", "5")
    now = _state(out, "abc")
    assert "skipped 1 of 3" in err and now["c"] == done["c"] and now["a"] != done["a"]
    # --force recomputes all; a folder another detect holds is refused.
    err, _ = run("--nms-mm", "5", "--force")
    assert "skipped" not in err and all(_state(out, "abc")[n] != now[n] for n in "abc")
    with folder_lock(out):
        assert main(["detect", str(model), vols[0], "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"blcam detect: error: {out}: in use by another blcam command (pid {os.getpid()} on " in err
