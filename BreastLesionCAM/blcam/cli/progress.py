"""One progress protocol for every command a GUI drives (``--progress-json``).

The Slicer module runs ``blcam export``, ``train`` and ``detect`` as background processes
and follows them by reading their stdout. With ``--progress-json`` each of them prints one
JSON object per line, flushed, and nothing else on stdout:

* ``{"event": "progress", "stage": ..., "fraction": 0.42, ...}``: how far the whole command
  is (``fraction``, 0-1), in which stage, plus the stage's own fields (training: the epoch's
  losses and accuracies; Detect: which volume of how many);
* ``{"event": "done", ...}``: the command succeeded; what it wrote (``model``, ``manifest``,
  ``summary``);
* ``{"event": "error", "message": ...}``: the command failed (also on stderr, and the exit
  status is non-zero), printed by :func:`blcam.cli.main` for every command.

The library functions never print these: they take callbacks (``on_progress``,
``on_epoch``), and this module is the one place that turns them into records. Under
``torchrun`` only rank 0 prints, so a GUI sees one stream.
"""

from __future__ import annotations

import json
import os
import sys

from ..io.atomic import json_safe


class ProgressEmitter:
    """Prints the protocol's records when ``enabled`` (and on rank 0); a no-op otherwise."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled = bool(enabled) and os.environ.get("RANK", "0") == "0"
        self.stream = stream

    def emit(self, event: str, **fields) -> None:
        if self.enabled:
            stream = self.stream or sys.stdout
            stream.write(json.dumps(json_safe({"event": event, **fields})) + "\n")
            stream.flush()

    def progress(self, stage: str, fraction: float, **fields) -> None:
        self.emit("progress", stage=stage, fraction=round(max(0.0, min(1.0, float(fraction))), 4), **fields)

    def done(self, **fields) -> None:
        self.emit("done", **fields)

    def error(self, message: str) -> None:
        self.emit("error", message=message)
