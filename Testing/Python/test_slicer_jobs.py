"""The panel's job state machine (``Jobs``) through the Logic, with real processes and real MRML.

Every path ends in a defined state: success, a process that fails or is killed, a result
loader that raises (the input volume deleted while Detect runs), a listener that raises, a
process that cannot start, cancel (which must not block: it runs on the GUI thread), and
closing the scene. The views (button texts, progress) are what the widget shows verbatim.

The Logic takes its process runner as a parameter; most tests give it one that runs a small
script instead of ``blcam`` (still a real child process, read and killed like any job), and
the Detect tests run the real ``blcam detect`` on a random model.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from blcam.errors import BlcamError
from BreastLesionCAMLib.Jobs import CANCELLING_TEXT, JobState
from BreastLesionCAMLib.Logic import BreastLesionCAMLogic, temporaryFolder
from BreastLesionCAMLib.ProcessRunner import ProcessRunner
from BreastLesionCAMLib.Scenario import addPhantomCase

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals (SIGTERM ignored, SIGKILL)")

SLEEPER = """
    import json, time
    print(json.dumps({"event": "progress", "stage": "export", "fraction": 0.25, "done": 1, "total": 4}), flush=True)
    time.sleep(600)
"""
STUBBORN = """
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
                              "time.sleep(600)"],
                             stdout=subprocess.PIPE)
    child.stdout.readline()
    print(json.dumps({"event": "started", "pids": [child.pid]}), flush=True)
    time.sleep(600)
"""


def script_runner(tmp_path, body: str, name: str = "job.py", runner=ProcessRunner):
    """A process factory for the Logic that runs ``body`` instead of the blcam command."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")

    def factory(args, onEvent=None, onLog=None, onFinished=None):
        return runner([sys.executable, "-u", str(path)], onEvent, onLog, onFinished)
    return factory


def a_cohort(tmp_path) -> Path:
    (tmp_path / "ds").mkdir(exist_ok=True)
    (tmp_path / "ds" / "cohort.csv").write_text("patient,volume,label,annotation\n", encoding="utf-8")
    return tmp_path / "ds"


def until(condition, seconds: float = 30.0, job=None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if job is not None:
            job.poll()
        time.sleep(0.05)


def test_a_job_reports_progress_and_succeeds_with_a_typed_result(headless, tmp_path):
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, """
        import json
        for done in range(1, 5):
            print(json.dumps({"event": "progress", "stage": "export", "fraction": done / 4, "done": done, "total": 4}),
                  flush=True)
    """))
    ended = []
    job = logic.exportPatches(a_cohort(tmp_path), onFinished=ended.append)
    view = logic.jobs.view("export")
    assert (view.buttonText, view.buttonEnabled, view.progressVisible) == ("Cancel export", True, True)
    assert job.wait(30) is JobState.SUCCEEDED
    assert ended == [job] and job.result.patches == tmp_path / "ds" / "patches"
    assert job.message.startswith("Export finished in")
    assert job.message.endswith(f"patches in {tmp_path / 'ds' / 'patches'}.")
    view = logic.jobs.view("export")
    assert (view.buttonText, view.running, view.progressVisible) == ("Export patches", False, False)
    assert job.fraction == 1.0 and view.status == job.message and not logic.jobs.poll()


@pytest.mark.parametrize("crash, expected", [
    ("print('blcam export: error: cohort.csv row 3: bad label', file=sys.stderr); sys.exit(2)",
     "Export failed: blcam export: error: cohort.csv row 3: bad label"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "Export failed: killed by signal 9 (out of memory?)"),
])
def test_a_process_that_fails_or_is_killed_ends_failed_with_its_reason(headless, tmp_path, crash, expected):
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, f"import os, signal, sys\n{crash}\n"))
    job = logic.exportPatches(a_cohort(tmp_path))
    assert job.wait(30) is JobState.FAILED
    assert job.message == expected and job.result is None
    assert logic.jobs.view("export").buttonText == "Export patches" and not logic.jobs.poll()


def test_cancel_returns_at_once_and_the_poll_loop_kills_what_ignores_it(headless, tmp_path):
    """A job (and its child) that ignore SIGTERM: cancel() still returns at once, the button
    says so, and polling kills both after the grace period."""
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, STUBBORN))
    job = logic.exportPatches(a_cohort(tmp_path))
    until(lambda: job.process.lastEvent is not None, job=job)
    pids = [job.process.pid] + job.process.lastEvent["pids"]
    t0 = time.monotonic()
    job.cancel()
    assert time.monotonic() - t0 < 0.3
    view = logic.jobs.view("export")
    assert (view.buttonText, view.buttonEnabled, view.running) == (CANCELLING_TEXT, False, True)
    job.poll()
    assert all(psutil.pid_exists(p) for p in pids) and job.running  # SIGTERM ignored: still there
    assert job.wait(15) is JobState.CANCELLED
    assert 2.5 < time.monotonic() - t0 < 10  # killed after the grace period, not before
    assert job.message == "Export cancelled."
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [] and logic.jobs.view("export").buttonText == "Export patches"


def test_stop_is_the_blocking_form_for_scripts_and_application_exit(headless, tmp_path):
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, STUBBORN))
    job = logic.exportPatches(a_cohort(tmp_path))
    until(lambda: job.process.lastEvent is not None, job=job)
    pids = [job.process.pid] + job.process.lastEvent["pids"]
    t0 = time.monotonic()
    assert logic.jobs.stopAll(timeout=10)
    assert time.monotonic() - t0 < 2  # killed at once, no grace period
    assert job.state is JobState.CANCELLED and job.message == "Export cancelled: Slicer is closing."
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def test_closing_the_scene_cancels_running_jobs(headless, tmp_path):
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, SLEEPER))
    job = logic.exportPatches(a_cohort(tmp_path))
    until(lambda: job.fraction == 0.25, job=job)
    headless.scene.Clear(False)
    assert job.cancelling
    assert job.wait(15) is JobState.CANCELLED
    assert job.message == "Export cancelled: the scene was closed."
    assert not psutil.pid_exists(job.process.pid) or psutil.Process(job.process.pid).status() == psutil.STATUS_ZOMBIE


def test_one_job_per_kind_and_one_heavy_job_per_device(headless, tmp_path):
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, SLEEPER))
    assert logic.deviceChoices()[:2] == [("auto", "auto (cpu)"), ("cpu", "cpu")]  # no GPU here
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "manifest.csv").write_text("kind\n", encoding="utf-8")
    export = logic.exportPatches(a_cohort(tmp_path))
    with pytest.raises(BlcamError, match="Export is already running"):
        logic.exportPatches(a_cohort(tmp_path))
    for device in ("cpu", "auto"):  # 'auto' is the CPU on this computer
        with pytest.raises(BlcamError, match="Export is running on cpu; .* or choose another device for Training"):
            logic.startTraining(patches, tmp_path / "run", device=device)
    logic.jobs.checkFree("train", "cuda:0")  # another device is free
    assert logic.jobs.running() == [export]
    export.stop()
    train = logic.startTraining(patches, tmp_path / "run", device="auto")
    assert train.running and train.device == "cpu"
    assert train.stop() and train.state is JobState.CANCELLED


def test_training_without_its_model_file_fails_instead_of_pretending(headless, tmp_path):
    """The training result loader raises (no 'done' event): the job fails with that reason and
    the current model is unchanged."""
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, """
        import json
        print(json.dumps({"event": "progress", "stage": "epoch", "fraction": 1.0, "epoch": 1, "epochs": 1,
                          "train_loss": 0.5, "eta_s": 0}), flush=True)
    """))
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "manifest.csv").write_text("kind\n", encoding="utf-8")
    job = logic.startTraining(patches, tmp_path / "run", device="cpu")
    assert job.wait(30) is JobState.FAILED
    assert job.message == "Training finished, but its results could not be used: " \
                          "blcam train ended without naming its model file"
    assert logic.getParameterNode().modelPath == "" and logic.jobs.view("train").buttonText == "Start training"


def test_listeners_that_raise_and_a_reader_that_breaks_still_end_the_job(headless, tmp_path):
    def broken(*args):
        raise RuntimeError("display broke")
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, """
        import json
        print(json.dumps({"event": "progress", "stage": "map", "fraction": 1.0}), flush=True)
        print("a log line", flush=True)
    """))
    job = logic.exportPatches(a_cohort(tmp_path), onEvent=broken, onLog=broken, onFinished=broken)
    assert job.wait(30) is JobState.SUCCEEDED  # display code cannot break the job

    class BrokenReader(ProcessRunner):
        def _handleLine(self, line, stream="stdout"):
            raise UnicodeError("unreadable output")
    logic = BreastLesionCAMLogic(process=script_runner(tmp_path, SLEEPER, "sleeper.py", BrokenReader))
    job = logic.exportPatches(a_cohort(tmp_path))
    assert job.wait(30) is JobState.FAILED
    assert job.message == "Export failed: UnicodeError: unreadable output"
    until(lambda: not psutil.pid_exists(job.process.pid)
          or psutil.Process(job.process.pid).status() == psutil.STATUS_ZOMBIE, seconds=5)
    assert logic.jobs.view("export").buttonText == "Export patches" and not logic.jobs.poll()


def test_a_process_that_cannot_start_fails_and_cleans_up(headless, tmp_path):
    given = []

    def missing(args, onEvent=None, onLog=None, onFinished=None):
        given.append([str(a) for a in args])
        return ProcessRunner([str(tmp_path / "no-such-python")], onEvent, onLog, onFinished)
    logic = BreastLesionCAMLogic(process=missing)
    case = addPhantomCase(headless.scene, "vol", 3)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"not read: the process never starts")
    ended = []
    job = logic.detect(case.volume, model, onFinished=ended.append)
    assert job.state is JobState.FAILED and ended == [job]
    assert job.message.startswith("Detect could not start: FileNotFoundError")
    assert logic.jobs.running() == [] and logic.jobs.view("detect").buttonText == "Detect"
    assert not Path(_detect_input(given[0])).parent.exists()  # the temporary folder is gone


def _detect_input(args) -> str:
    """The volume file in a ``blcam detect MODEL VOLUME`` command line."""
    return args[args.index("detect") + 2]


@pytest.fixture
def random_model_file(tmp_path):
    from _cam_fixtures import random_model
    from blcam.model import make_metadata, save_model
    path = tmp_path / "model.safetensors"
    save_model(path, random_model(), make_metadata("resnet10", "paper", 0.25, (16, 48, 48), (28, 64, 96)))
    return path


def test_detect_outputs_go_to_a_temporary_folder_that_is_removed(headless, tmp_path, random_model_file):
    logic = BreastLesionCAMLogic()
    case = addPhantomCase(headless.scene, "left", 7, lesions=1)
    job = logic.detect(case.volume, random_model_file, device="auto")
    assert job.args[job.args.index("--device") + 1] == job.device == "cpu"  # 'auto' resolved, as the board sees it
    assert "--no-pictures" in job.args      # no PNGs into a folder that is removed
    work = Path(_detect_input(job.args)).parent
    assert work.is_dir() and Path(job.args[job.args.index("--out") + 1]).parent == work
    assert job.wait(300) is JobState.SUCCEEDED, job.message + "\n".join(list(job.log)[-10:])
    assert not work.exists()
    assert job.result.folder is None and job.result.heatmap.GetImageData() is not None
    assert logic.getParameterNode().heatmapVolume is job.result.heatmap
    assert job.message.startswith("Detect finished in") and "candidate(s)" in job.message


def test_deleting_the_input_volume_while_detect_runs_fails_the_job_cleanly(headless, tmp_path, random_model_file):
    """Defect: the results loader raised AttributeError (the node had no scene), the runner
    was already marked finished, and the panel's button stayed 'Cancel Detect' while the
    timer polled forever. Now the job fails with a message and the panel is idle."""
    logic = BreastLesionCAMLogic()
    case = addPhantomCase(headless.scene, "doomed", 8, lesions=1)
    job = logic.detect(case.volume, random_model_file, device="cpu", extraArgs=("--overlays", "0"))
    assert logic.jobs.view("detect").buttonText == "Cancel Detect"
    headless.scene.RemoveNode(case.volume)
    assert job.wait(300) is JobState.FAILED
    assert job.message == ("Detect finished, but its results could not be used: "
                           "the input volume 'doomed' was removed from the scene while Detect ran")
    view = logic.jobs.view("detect")
    assert (view.buttonText, view.running, view.progressVisible) == ("Detect", False, False)
    assert not logic.jobs.poll() and logic.jobs.running() == []  # the panel's timer stops
    assert logic.getParameterNode().heatmapVolume is None
    assert not Path(_detect_input(job.args)).parent.exists()


def test_temporary_folders_outside_slicer_are_the_systems(tmp_path):
    assert not hasattr(slicer, "app")  # slicer-core: no application, no slicer.util.tempDirectory
    folder = temporaryFolder("BreastLesionCAM-Test")
    try:
        assert folder.is_dir() and not any(folder.iterdir()) and folder.name.startswith("BreastLesionCAM-Test-")
        assert temporaryFolder("BreastLesionCAM-Test") != folder
    finally:
        folder.rmdir()


def test_the_device_menu_before_pytorch_is_installed():
    """Slicer loads the module before torch is installed: the menu then offers auto and cpu,
    and asks again once torch is there (nothing is remembered from the first answer)."""
    import subprocess
    module = Path(__file__).resolve().parents[2] / "BreastLesionCAM"
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); "
            "from BreastLesionCAMLib.Logic import BreastLesionCAMLogic; logic = BreastLesionCAMLogic(); "
            "print(logic.deviceChoices(), logic.concreteDevice('auto'), logic._devices)")
    out = subprocess.run([sys.executable, "-c", code, str(module)], capture_output=True, text=True,
                         encoding="utf-8", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('auto', 'auto (cpu)'), ('cpu', 'cpu')] cpu None"
