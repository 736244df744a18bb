"""Real filesystem faults for the bad-input tests: read-only folders and full disks.

Tests run as root in CI, where ``chmod 555`` does not stop a write, so a read-only folder is
a read-only bind mount of itself (EROFS), else an immutable folder (``chattr +i``, EPERM),
else (not root) a plain ``chmod``; a full disk is a tiny tmpfs (ENOSPC). Where none of this
is possible the case is skipped with the reason, never faked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


class Faults:
    """Applies faults to folders and undoes them all at teardown (even after a failure)."""

    def __init__(self):
        self._undo: list[list[str] | tuple] = []

    def read_only(self, folder: Path) -> Path:
        """Make ``folder`` (created if missing) refuse new files, however privileged we are."""
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            self._undo.append(("chmod", folder))
            return folder
        if self._run(["mount", "--bind", str(folder), str(folder)]):
            self._undo.append(["umount", str(folder)])
            if self._run(["mount", "-o", "remount,bind,ro", str(folder)]):
                return folder
        if self._run(["chattr", "+i", str(folder)]):
            self._undo.append(["chattr", "-i", str(folder)])
            return folder
        pytest.skip("cannot make a folder read-only for root here (no bind mount, no chattr +i)")

    def small_disk(self, folder: Path, size: str) -> Path:
        """Mount a tmpfs of ``size`` (e.g. '16k') on ``folder``: writes past it fail with ENOSPC."""
        folder.mkdir(parents=True, exist_ok=True)
        if not self._run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]):
            pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN) to simulate a full disk")
        self._undo.append(["umount", str(folder)])
        return folder

    @staticmethod
    def _run(cmd: list[str]) -> bool:
        try:
            return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def undo(self) -> None:
        for step in reversed(self._undo):
            if step[0] == "chmod":
                step[1].chmod(0o755)
            else:
                self._run(step)
        self._undo.clear()
