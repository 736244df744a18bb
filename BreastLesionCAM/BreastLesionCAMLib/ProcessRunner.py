"""One ``python -m blcam ...`` command running in the background, with progress and cancel.

Export, training and Detect take minutes to hours; run inside Slicer's process they would
freeze the GUI and could not be stopped. So each runs as a child process (the same Python
that runs Slicer, with the module folder on ``PYTHONPATH`` so ``import blcam`` finds the
bundled package). Two threads read its stdout and stderr into a queue; :meth:`poll`, called
by the owner (a ``qt.QTimer`` in the widget, a loop in :meth:`wait` elsewhere), turns lines
into callbacks *on the caller's thread*, which is the only thread allowed to touch MRML.

Lines on stdout that are the records of ``blcam``'s one progress protocol
(``--progress-json``, :mod:`blcam.cli.progress`: JSON objects with an ``"event"``) become
events; every other line, on either stream, is log. stdout is read apart from stderr, where
tqdm redraws without newlines and would swallow the records.

:meth:`cancel` stops the whole process tree (DataLoader workers, export pools, ...): killing
only the direct child would leave its workers computing. It returns at once, so a Cancel
button never freezes the GUI: it asks every process to terminate, and :meth:`poll` kills
whatever is still alive after a grace period. :meth:`stop` is the blocking form for scripts,
tests and application exit. No Qt here.

:class:`ProcessProtocol` is what the module's jobs (:mod:`.Jobs`) need from a runner, so the
Logic can be given another implementation (``BreastLesionCAMLogic(process=...)``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Protocol

MODULE_DIR = Path(__file__).resolve().parents[1]  # BreastLesionCAM/, which holds blcam/
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_END = object()
ORPHAN_GRACE_S = 5.0
KILL_GRACE_S = 3.0   # after cancel(): time to exit on SIGTERM before poll() kills


def pythonExecutable() -> str:
    """Slicer's ``PythonSlicer`` inside Slicer (``sys.executable`` is the GUI there), else this Python."""
    try:
        from slicer import app  # noqa: F401  (only exists inside the Slicer application)
    except ImportError:
        return sys.executable
    return shutil.which("PythonSlicer") or sys.executable


def progressFraction(event: dict) -> float | None:
    """The fraction done (0–1) of a ``progress`` record; ``None`` for any other record."""
    value = event.get("fraction")
    if event.get("event") != "progress" or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return max(0.0, min(1.0, float(value)))


def blcamCommand(*args) -> list[str]:
    """The command line that runs ``blcam`` with ``args`` in a fresh, unbuffered Python."""
    return [pythonExecutable(), "-u", "-m", "blcam", *[str(a) for a in args]]


class ProcessProtocol(Protocol):
    """One background command as the jobs drive it (see :class:`ProcessRunner`)."""

    args: list
    log: deque
    events: list             # the non-progress JSON events, e.g. training's {"event": "done", ...}
    returncode: int | None
    cancelled: bool

    def start(self) -> ProcessProtocol: ...
    def poll(self) -> bool: ...
    def cancel(self, grace: float = KILL_GRACE_S) -> None: ...
    def stop(self, timeout: float = 5.0) -> bool: ...
    def errorMessage(self) -> str: ...

    @property
    def elapsed(self) -> float: ...


# Builds a process from the command line and the three callbacks (``ProcessRunner`` itself).
ProcessFactory = Callable[..., ProcessProtocol]


class ProcessRunner:
    """Start, follow and stop one background command.

    Callbacks (all optional, all called from :meth:`poll`): ``onEvent(dict)`` for progress
    events, ``onLog(str)`` for other output lines, ``onFinished(runner)`` once at the end,
    after every line has been delivered. The run counts as finished before ``onFinished`` is
    called; an exception a callback raises reaches the caller of :meth:`poll` (the jobs of
    :mod:`.Jobs` turn it into a failed job, so nothing is left half-ended).
    """

    def __init__(self, args, onEvent=None, onLog=None, onFinished=None, env=None, cwd=None,
                 logLines: int = 5000):
        self.args = [str(a) for a in args]
        self.onEvent, self.onLog, self.onFinished = onEvent, onLog, onFinished
        self.env, self.cwd = env, cwd
        self.log: deque[str] = deque(maxlen=logLines)
        self.events: list[dict] = []
        self.lastEvent: dict | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self.startTime: float | None = None
        self.endTime: float | None = None
        self._proc: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._open = 0           # output streams not yet at end-of-file
        self._exitSeen: float | None = None
        self._finished = False
        self._cancelTree: list = []      # the processes alive when cancel() was called
        self._killAt: float | None = None
        self._killed = False

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> ProcessRunner:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        popenArgs = {}
        if os.name == "nt":
            popenArgs["creationflags"] = subprocess.CREATE_NO_WINDOW
        else:
            popenArgs["start_new_session"] = True  # Ctrl-C in Slicer's terminal must not hit the job
        self.startTime = time.monotonic()
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                      errors="replace", bufsize=1, cwd=self.cwd, env=env, **popenArgs)
        self._open = 2
        for stream, name in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr")):
            threading.Thread(target=self._readStream, args=(stream, name), daemon=True,
                             name=f"blcam-{self._proc.pid}-{name}").start()
        return self

    def _readStream(self, stream, name: str) -> None:
        for line in stream:
            self._queue.put((name, line.rstrip("\r\n")))
        stream.close()
        self._queue.put((name, _END))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True until the process has ended *and* :meth:`poll` has delivered everything."""
        return self._proc is not None and not self._finished

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def succeeded(self) -> bool:
        return self._finished and self.returncode == 0 and not self.cancelled

    @property
    def elapsed(self) -> float:
        if self.startTime is None:
            return 0.0
        return (self.endTime or time.monotonic()) - self.startTime

    def errorMessage(self) -> str:
        """Why a run failed: its ``error`` event, else the CLI's ``error:`` line, else the last line."""
        for event in reversed(self.events):
            if event.get("event") == "error" and event.get("message"):
                return str(event["message"])
        for line in reversed(self.log):
            if "error:" in line:
                return line.strip()
        if self.returncode is not None and self.returncode < 0:
            return f"killed by signal {-self.returncode} (out of memory?)"
        lines = [line.strip() for line in self.log if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"

    # -- polling ----------------------------------------------------------------------
    def poll(self, maxLines: int = 1000) -> bool:
        """Deliver pending output as callbacks; returns True while more is to come.

        After :meth:`cancel`, it also kills what outlived the grace period, and the run
        ends only once every process of the job is gone."""
        if self._proc is None or self._finished:
            return False
        if self.cancelled and not self._killed and time.monotonic() >= self._killAt:
            self._killTree()
        for _ in range(maxLines):
            try:
                stream, item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._open -= 1
            else:
                self._handleLine(item, stream)
        if self._proc.poll() is None or not self._queue.empty():
            return True
        if self.cancelled and _alive(self._cancelTree):  # workers still on their way out
            return True
        # Exited. Finish once both streams are drained, or soon after exit if an orphaned
        # grandchild still holds a pipe open (it must not keep the job "running" forever).
        self._exitSeen = self._exitSeen or time.monotonic()
        if self._open == 0 or time.monotonic() - self._exitSeen > ORPHAN_GRACE_S:
            self._finish()
            return False
        return True

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> int | None:
        """Poll until the run ends (or ``timeout`` s pass); returns the exit status or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)
        return self.returncode

    def _handleLine(self, line: str, stream: str = "stdout") -> None:
        # stdout carries the JSON events; stderr the human log and tqdm bars, whose "\r"
        # redraws arrive as separate lines (universal newlines) with terminal escapes.
        line = _ANSI.sub("", line)
        event = None
        text = line.strip()
        if stream == "stdout" and text.startswith("{") and text.endswith("}"):
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                event = None
        if event is None:
            self.log.append(line)
            if self.onLog and text:
                self.onLog(line)
            return
        self.lastEvent = event
        if event.get("event") != "progress":
            self.events.append(event)
        if self.onEvent:
            self.onEvent(event)

    def _finish(self) -> None:
        self.returncode = self._proc.returncode
        self.endTime = time.monotonic()
        self._finished = True
        if self.onFinished:
            self.onFinished(self)

    # -- cancel ---------------------------------------------------------------------
    def processTree(self) -> list:
        """The process and all its descendants that are still alive (``psutil.Process`` objects)."""
        import psutil  # imported here: the module must load in Slicer before dependencies exist
        if self._proc is None:
            return []
        try:
            parent = psutil.Process(self._proc.pid)
            return [parent] + parent.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cancel(self, grace: float = KILL_GRACE_S) -> None:
        """Ask every process of the job to terminate, and return at once.

        :meth:`poll` kills whatever is still alive ``grace`` seconds later; a second call
        can only shorten that wait."""
        if self._proc is None or self._finished:
            return
        deadline = time.monotonic() + max(0.0, grace)
        if self.cancelled:
            self._killAt = min(self._killAt, deadline)
            return
        self.cancelled = True
        self._killAt = deadline
        self._cancelTree = self.processTree()
        self._signalTree(self._cancelTree, "terminate", signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> bool:
        """Kill the job now and wait until it has ended; True if every process is gone within
        ``timeout`` s. Blocks: for scripts, tests and application exit, not for a button."""
        if self._proc is None:
            return True
        self.cancel(grace=0.0)
        self.wait(timeout)
        return self._finished and not _alive(self._cancelTree)

    def _killTree(self) -> None:
        self._killed = True
        # Also the processes started since cancel() (they are in the job's process group).
        self._signalTree(self._cancelTree + self.processTree(), "kill", getattr(signal, "SIGKILL", None))

    def _signalTree(self, procs: list, method: str, groupSignal) -> None:
        import psutil
        for proc in procs:
            try:
                getattr(proc, method)()
            except psutil.Error:
                pass
        if os.name != "nt":
            # The job runs in its own session: this also reaches orphans whose parent died first.
            try:
                os.killpg(self._proc.pid, groupSignal)
            except OSError:
                pass


def _alive(procs: list) -> list:
    """The processes of ``procs`` that still run (a zombie has ended: only its exit status is left)."""
    import psutil
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            pass
    return alive
