"""The panel's background jobs as a state machine that the Qt widget only displays.

A job (patch export, training, Detect, batch Detect, calibration) is one background process plus what happens when it
ends (loading Detect's results into the scene, making a trained model the current one) and
what is cleaned up afterwards (temporary folders). Its state goes

    running ──▶ succeeded | failed | cancelled

and every job reaches one of the three end states, whatever happens: a process that exits
non-zero or is killed, a result loader that raises (the input volume was deleted while
Detect ran), a callback that raises, a process that cannot even start, or the scene being
closed (which cancels every running job: their results would have nowhere to go). The end
state, a one-line message and the typed result are on the :class:`Job`; the button texts
and the progress bar of each job kind are a :class:`JobView` from :class:`JobBoard`, so
the widget holds no state of its own and everything here runs and is tested without Qt.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

import slicer

from blcam.errors import BlcamError

from .ProcessRunner import KILL_GRACE_S, ProcessFactory, progressFraction

KINDS = ("export", "train", "detect", "batch", "calibrate")
TITLES = {"export": "Export", "train": "Training", "detect": "Detect", "batch": "Batch Detect",
          "calibrate": "Calibration"}
IDLE_TEXTS = {"export": "Export patches", "train": "Start training", "detect": "Detect", "batch": "Detect all",
              "calibrate": "Calibrate the model on this batch"}
CANCEL_TEXTS = {"export": "Cancel export", "train": "Cancel training", "detect": "Cancel Detect",
                "batch": "Cancel batch Detect", "calibrate": "Cancel calibration"}
NO_DEVICE = ""          # a light job (calibration: a fit on Detect's outputs) that no device job blocks
CANCELLING_TEXT = "Cancelling ..."


class JobState(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ExportResult:
    patches: Path

    def summary(self) -> str:
        return f"patches in {self.patches}"


@dataclass(frozen=True)
class TrainingResult:
    model: Path
    runFolder: Path
    calibration: dict | None = None     # what ``--calibrate`` fitted (``blcam train``'s done record)

    @property
    def curves(self) -> Path | None:
        """The loss and accuracy curves ``blcam train`` drew, if it did."""
        path = self.runFolder / "curves.png"
        return path if path.is_file() else None

    def summary(self) -> str:
        c = self.calibration
        if not c:
            return f"model {self.model}"
        return (f"model {self.model}; its scores are calibrated on the {c['volumes']} volumes of validation fold "
                f"{c['fold']}, which it never trained on (candidate calibration error "
                f"{c['candidate_ece_raw']:.2f} → {c['candidate_ece']:.2f}; report: {c['report']})")


@dataclass(frozen=True)
class CalibrationResult:
    """``blcam calibrate`` on a batch: the calibrated model file and what the fit did."""

    model: Path
    calibration: dict                   # blcam.evaluation.recalibration.fit_summary

    def summary(self) -> str:
        c = self.calibration
        return (f"{self.model} is calibrated on {c['volumes']} volumes ({c['lesion_volumes']} with lesions, "
                f"{c['hits']} hits among the candidates); calibration error on them: candidates "
                f"{c['candidate_ece_raw']:.2f} → {c['candidate_ece']:.2f}, volumes {c['volume_ece_raw']:.2f} → "
                f"{c['volume_ece']:.2f}; report: {c['report']}")


def describeEpoch(event: dict) -> str:
    """One line for a training event: the epoch, its losses, held-out accuracy and time left;
    or, with "Calibrate scores", which validation volume Detect is on."""
    if event.get("stage") == "calibrate":
        return (f"Calibrating scores on validation fold {event.get('fold')}: Detect on volume "
                f"{event.get('volume')} of {event.get('volumes')}")
    parts = [f"Epoch {event.get('epoch')}/{event.get('epochs')}"]
    for key, name in (("train_loss", "loss"), ("val_loss", "held-out loss"), ("val_acc", "held-out accuracy")):
        if isinstance(event.get(key), (int, float)):
            parts.append(f"{name} {event[key]:.3f}")
    if isinstance(event.get("eta_s"), (int, float)):
        parts.append(f"about {event['eta_s'] / 60:.0f} min left")
    return " · ".join(parts)


def _describeException(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BlcamError) else f"{type(exc).__name__}: {exc}"


def _call(function, *args) -> None:
    """Call a listener; one that raises is logged and must not stop the job's bookkeeping."""
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - display code must never leave a job half-ended
        logging.exception("BreastLesionCAM: a job listener raised")


class Job:
    """One background job from its start to one of its end states.

    ``complete(job)`` runs once when the process exits with status 0 and returns the typed
    result (:class:`ExportResult`, :class:`TrainingResult`, ``Results.DetectionResult``); if
    it raises, the job failed. ``cleanup()`` runs once at the end whatever the outcome.
    Progress records (``{"event": "progress", "fraction": ...}``, :mod:`blcam.cli.progress`)
    move the progress fraction; ``describe(record)`` turns one into the status line.
    """

    def __init__(self, kind: str, args, process: ProcessFactory, device: str = "cpu",
                 complete: Callable | None = None, cleanup: Callable | None = None,
                 describe: Callable | None = None):
        if kind not in KINDS:
            raise ValueError(f"job kind '{kind}': choose one of {', '.join(KINDS)}")
        self.kind, self.device, self.title = kind, device, TITLES[kind]
        self.state = JobState.RUNNING
        self.message = ""
        self.status = "Starting ..."            # one line: the latest progress in words, then the message
        self.fraction: float | None = None     # None: no progress reported yet
        self.result = None
        self.cancelReason: str | None = None   # set by cancel(): why ("" for the user's Cancel)
        self._complete, self._cleanup = complete, cleanup
        self._describe = describe
        self._listeners = {"event": [], "log": [], "ended": []}
        self._scene = self._sceneTag = None
        self.process = process(args, self._onEvent, self._onLog, self._onProcessEnded)

    def listen(self, onEvent=None, onLog=None, onEnded=None) -> Job:
        """Add callbacks: ``onEvent(dict)``, ``onLog(str)``, ``onEnded(job)`` (once, in the end state)."""
        for key, callback in (("event", onEvent), ("log", onLog), ("ended", onEnded)):
            if callback is not None:
                self._listeners[key].append(callback)
        return self

    # -- state -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED

    @property
    def cancelling(self) -> bool:
        return self.running and self.cancelReason is not None

    @property
    def args(self) -> list:
        return self.process.args

    @property
    def log(self):
        return self.process.log

    @property
    def elapsed(self) -> float:
        return self.process.elapsed

    # -- lifecycle -------------------------------------------------------------------
    def start(self, scene=None) -> Job:
        """Start the process; closing ``scene`` (a ``vtkMRMLScene``) will cancel the job."""
        try:
            self.process.start()
        except Exception as exc:  # noqa: BLE001 - e.g. no Python executable: the job failed
            logging.exception("BreastLesionCAM: %s could not start", self.title)
            self._end(JobState.FAILED, f"{self.title} could not start: {_describeException(exc)}")
            return self
        if scene is not None:
            self._scene = scene
            self._sceneTag = scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, _cancelOnClose(self))
        return self

    def poll(self) -> bool:
        """Deliver the process's output and end the job when it is over; True while running."""
        if not self.running:
            return False
        try:
            more = self.process.poll()
        except Exception as exc:  # noqa: BLE001 - a callback raised: the job still ends, as failed
            logging.exception("BreastLesionCAM: %s failed while its output was read", self.title)
            self._end(JobState.FAILED, f"{self.title} failed: {_describeException(exc)}")
            try:  # nothing polls an ended job: kill now rather than after a grace period
                self.process.cancel(grace=0.0)
                self.process.poll()
            except Exception:  # noqa: BLE001
                logging.exception("BreastLesionCAM: %s could not be stopped", self.title)
            return False
        if not more and self.running:  # a process that ended without telling us
            self._onProcessEnded(self.process)
        return self.running

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> JobState:
        """Poll until the job ends (or ``timeout`` s pass); returns its state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(interval)
        return self.state

    def cancel(self, reason: str = "") -> None:
        """Ask the process to stop and return at once; the job ends, cancelled, in a later
        :meth:`poll` (the process is killed if it has not exited after a grace period)."""
        if not self.running:
            return
        if self.cancelReason is None:
            self.cancelReason = reason
        self.process.cancel(KILL_GRACE_S)

    def stop(self, timeout: float = 5.0, reason: str = "stopped") -> bool:
        """Kill the job now and wait for its end (scripts, tests, application exit); True if
        every process is gone within ``timeout`` s."""
        if self.running and self.cancelReason is None:
            self.cancelReason = reason
        gone = self.process.stop(timeout)
        self.poll()
        return gone

    # -- process callbacks -------------------------------------------------------------
    def _onEvent(self, event: dict) -> None:
        fraction = progressFraction(event)
        if fraction is not None:
            self.fraction = fraction
            if self._describe is not None:
                self.status = self._describe(event)
        for listener in self._listeners["event"]:
            _call(listener, event)

    def _onLog(self, line: str) -> None:
        for listener in self._listeners["log"]:
            _call(listener, line)

    def _onProcessEnded(self, process) -> None:
        if not self.running:
            return
        if process.cancelled or self.cancelReason is not None:
            reason = self.cancelReason or ""
            self._end(JobState.CANCELLED, f"{self.title} cancelled" + (f": {reason}." if reason else "."))
            return
        if process.returncode != 0:
            self._end(JobState.FAILED, f"{self.title} failed: {process.errorMessage()}")
            return
        try:
            self.result = self._complete(self) if self._complete is not None else None
        except Exception as exc:  # noqa: BLE001 - whatever the loader hit, the job ends failed
            logging.exception("BreastLesionCAM: %s results could not be used", self.title)
            self._end(JobState.FAILED, f"{self.title} finished, but its results could not be used: "
                      f"{_describeException(exc)}")
            return
        summary = self.result.summary() if hasattr(self.result, "summary") else ""
        self._end(JobState.SUCCEEDED, f"{self.title} finished in {self.elapsed:.0f} s"
                  + (f": {summary}." if summary else "."))

    def _end(self, state: JobState, message: str) -> None:
        if self._cleanup is not None:
            _call(self._cleanup)
        if self._scene is not None:
            self._scene.RemoveObserver(self._sceneTag)
            self._scene = self._sceneTag = None
        self.state, self.message, self.status = state, message, message
        if state is JobState.SUCCEEDED:
            self.fraction = 1.0
        for listener in self._listeners["ended"]:
            _call(listener, self)


def _cancelOnClose(job: Job):
    """The scene's close observer for ``job``. It holds the job weakly: a strong reference
    from the scene would keep a forgotten job (and its process runner) alive with the scene,
    and a scene destroyed during garbage collection would call into a half-collected job."""
    ref = weakref.ref(job)

    def onClose(caller=None, event=None) -> None:
        alive = ref()
        if alive is not None:
            alive.cancel("the scene was closed")
    return onClose


@dataclass(frozen=True)
class JobView:
    """What the panel shows for one job kind: its button and its progress bar."""

    buttonText: str
    buttonEnabled: bool       # False while a cancel is under way; when idle the panel also checks inputs
    running: bool
    progressVisible: bool
    progress: float | None    # 0-1; None: busy indicator (nothing reported yet)
    status: str


class JobBoard:
    """The Logic's jobs: the latest of each kind, and which may start.

    Rule: one job per kind, and one heavy job per device at a time. Two networks on one GPU
    compete for its memory (the second can run it out of memory and fail midway) and each
    runs at half speed; on the CPU two jobs share the same cores, and a patch export is CPU
    work. So a start on a busy device is refused with a message naming the running job;
    jobs on different devices (training on cuda:0 while Detect runs on the CPU) run side by
    side. A calibration is light (a fit on Detect's outputs, device ``NO_DEVICE``) and only
    waits for another calibration. Devices are compared as concrete names ('auto' resolved, see
    :func:`blcam.device.concrete_device`).
    """

    def __init__(self):
        self.latest: dict[str, Job | None] = {kind: None for kind in KINDS}

    def job(self, kind: str) -> Job | None:
        """The latest job of ``kind``, running or ended (None before the first)."""
        return self.latest[kind]

    def running(self) -> list[Job]:
        return [job for job in self.latest.values() if job is not None and job.running]

    def checkFree(self, kind: str, device: str) -> None:
        """Raise :class:`BlcamError` if a ``kind`` job may not start on ``device`` now."""
        for job in self.running():
            if job.kind == kind:
                raise BlcamError(f"{job.title} is already running; wait for it to end or cancel it.")
            if device != NO_DEVICE and job.device == device:
                raise BlcamError(f"{job.title} is running on {device}; wait for it to end or cancel it, "
                                 f"or choose another device for {TITLES[kind]}.")

    def add(self, job: Job) -> Job:
        self.checkFree(job.kind, job.device)
        self.latest[job.kind] = job
        return job

    def poll(self) -> bool:
        """Poll every running job; True while any is still running."""
        for job in self.running():
            job.poll()
        return bool(self.running())

    def cancelAll(self, reason: str) -> None:
        for job in self.running():
            job.cancel(reason)

    def stopAll(self, timeout: float = 5.0) -> bool:
        """Kill every running job and wait (application exit); True if all are gone."""
        return all([job.stop(timeout, "Slicer is closing") for job in self.running()])

    def view(self, kind: str) -> JobView:
        job = self.latest[kind]
        status = job.status if job is not None else ""
        if job is None or not job.running:
            return JobView(IDLE_TEXTS[kind], True, False, False, None, status)
        if job.cancelling:
            return JobView(CANCELLING_TEXT, False, True, True, job.fraction, status)
        return JobView(CANCEL_TEXTS[kind], True, True, True, job.fraction, status)
