"""Process pools whose workers die with their parent (``export --jobs``, ``phantom --jobs``).

A ``ProcessPoolExecutor`` worker blocks reading its call queue; if the parent is killed
(SIGKILL, OOM killer, a cluster job's time limit) nothing ever closes that queue and the
workers wait forever, holding memory and the folder lock's descriptor. Each worker
therefore arranges its own death at start-up: on Linux the kernel sends it SIGKILL when
its parent ends (``prctl(PR_SET_PDEATHSIG)``), and everywhere a daemon thread polls the
parent pid once a second and exits when the worker has been re-parented.

Workers are forked on Linux (Python's default up to 3.13, named here so 3.14's
forkserver default does not make their parent the fork server) and spawned elsewhere; in
both cases their parent is the process that made the pool, whose pid they are given.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``max_workers`` processes that end when this one does."""
    method = "fork" if sys.platform.startswith("linux") else None
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context(method),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when ``parent_pid`` ends (see the module docstring)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)          # 9 = SIGKILL
        except (OSError, AttributeError):
            pass                                               # the polling thread still works
    # The parent may have died before prctl took effect: then no signal will ever come.
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="blcam-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    """Exit as soon as this process has been re-parented (its parent is gone)."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os._exit(1)
