"""Rerunning ``blcam detect`` skips the volumes an earlier run into the same folder finished.

A killed detect over a cohort used to start again from its first volume (minutes per ABUS
volume). After a volume's outputs are all written, ``<name>_done.json`` records what they
were computed from: the model file (size, mtime, SHA-256), the volume (path, size,
mtime_ns; for a DICOM folder the listing of its files), the detect settings, what the
cohort said about the volume (its truth points are drawn in the pictures) and the blcam
version. A rerun skips a volume whose record matches and whose heatmap and candidates are
still there, and reuses its ``detections.csv`` row; anything else is recomputed, and the
old record is deleted first, so a recomputation killed half-way is never taken for done.
The device is not an input: CPU and GPU maps differ only by rounding. ``--force``
recomputes everything.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..io.atomic import write_json_atomic
from .outputs import VolumeOutputs

if TYPE_CHECKING:                 # pipeline imports this module
    from .pipeline import DetectSettings, VolumeJob

FORMAT = "blcam-detect-record-v1"
_CHUNK = 1 << 20


def file_identity(path: Path, digest: bool = False) -> dict:
    """Path, size and modification time of ``path`` (and its SHA-256 with ``digest``)."""
    st = path.stat()
    ident = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if digest:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        ident["sha256"] = h.hexdigest()
    return ident


def volume_identity(path: Path) -> dict:
    """A volume file's identity, or a DICOM folder's: the identity of every file in it."""
    if path.is_dir():
        return {"path": str(path.resolve()),
                "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(path.iterdir())
                          if p.is_file()]}
    return file_identity(path)


class FinishedVolumes:
    """The per-volume records of one output folder, checked against this run's inputs."""

    def __init__(self, out_dir: Path, model_path: Path, settings: DetectSettings, force: bool = False):
        self.out, self.force, self.skipped = Path(out_dir), force, 0
        self._pending: dict[str, dict] = {}     # inputs read before computing, recorded after
        self.common = {"model": file_identity(Path(model_path), digest=True), "settings": asdict(settings),
                       "blcam": __version__}

    def _record_path(self, job: VolumeJob) -> Path:
        return VolumeOutputs(self.out, job.name).done

    def _inputs(self, job: VolumeJob) -> dict:
        truth = None if job.truth_lps is None else [[float(v) for v in p] for p in job.truth_lps]
        inputs = {**self.common, "volume": volume_identity(Path(job.path)),
                  "job": {"name": job.name, "patient": job.patient, "label": job.label, "truth_lps": truth}}
        return json.loads(json.dumps(inputs))      # as it reads back (tuples → lists)

    def finished_row(self, job: VolumeJob) -> dict | None:
        """The ``detections.csv`` row of ``job`` if an earlier run finished it from the same
        inputs, else ``None`` (and any stale record is removed: the volume will be redone)."""
        path, inputs = self._record_path(job), self._inputs(job)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        ok = (not self.force and isinstance(record, dict) and record.get("format") == FORMAT
              and record.get("inputs") == inputs
              and all((self.out / str(record["row"].get(k, ""))).is_file() for k in ("heatmap", "candidates_json")))
        if ok:
            self.skipped += 1
            return record["row"]
        path.unlink(missing_ok=True)
        self._pending[job.name] = inputs
        return None

    def record(self, job: VolumeJob, row: dict) -> None:
        """Mark ``job`` finished (call once all its outputs are written). The inputs recorded
        are those read before computing: a volume edited meanwhile is redone next time."""
        inputs = self._pending.pop(job.name)
        write_json_atomic(self._record_path(job), {"format": FORMAT, "inputs": inputs, "row": row})

    def report(self, total: int, show: bool) -> None:
        if show and self.skipped:
            print(f"detect: skipped {self.skipped} of {total} volume(s) finished by an earlier run into {self.out} "
                  "(same model, volume and settings); --force recomputes them", file=sys.stderr)
