"""Atomic file writes: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the complete old file, the complete new
file, or nothing: never half of one. The temporary name carries the process id, so two
processes writing the same target never share a temporary file.

A write that fails (read-only folder, full disk, a file size limit) becomes one
:class:`~blcam.errors.BlcamError` naming the target and the reason, after the temporary
file is removed; the previous version of the target, if any, is untouched. Finished files
get the mode the umask gives a new file, whatever the writer used for its temporary
(safetensors writes 0600).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BlcamError


def _umask_file_mode() -> int:
    """``0o666`` less the process umask, read once (``os.umask`` can only be read by setting
    it, which would race with the checkpoint writer thread if done per write)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _umask_file_mode()


def temp_path_for(target: Path) -> Path:
    """A temporary sibling of ``target`` that ``.gitignore`` and resumed runs recognise."""
    return target.with_name(f"{target.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed over ``target``.

    The temporary file must keep the target's extension where a writer picks the format
    from it (SimpleITK, numpy), so the suffix goes *before* the extension in that case.
    """
    target = Path(target)
    make_folder(target.parent)
    suffixes = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffixes)] if suffixes else target.name
    tmp = target.with_name(f"{stem}.tmp-{os.getpid()}{suffixes}")
    try:
        try:
            yield tmp
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, target)
        except BlcamError:
            raise
        except Exception as exc:
            # Every caller's block is a single writer call (numpy, torch, safetensors, ITK,
            # matplotlib), so a failure here is a failure to write this file.
            raise BlcamError(f"{target}: cannot write ({write_failure_reason(exc, target.parent)})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def write_failure_reason(exc: BaseException, folder: Path) -> str:
    """A short reason for a failed write. Writers in C++ (torch, ITK) report a full disk as
    an opaque RuntimeError ("unexpected pos 576 vs 534") and numpy without an errno, so a
    folder with no free space left is named as such."""
    try:
        full = os.statvfs(folder).f_bavail == 0
    except OSError:
        full = False
    if full:
        return "no space left on device"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def make_folder(folder: str | os.PathLike, option: str | None = None) -> Path:
    """Create ``folder`` (and its parents); a file in the way or a read-only parent becomes
    one :class:`BlcamError` naming the path (and the ``option`` that gave it), not a traceback."""
    folder = Path(folder)
    check_output_folder(folder, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlcamError(f"{exc.filename or folder}: cannot create folder ({exc.strerror or exc})") from exc
    return folder


def check_output_folder(folder: str | os.PathLike, option: str | None = "--out") -> None:
    """Refuse an output folder that is an existing file, or lies under one: users pass a
    file name to ``--out`` by mistake, and the OS error would name neither."""
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == folder else f"lies under the file {path}"
                name = f"{option} {folder}" if option else str(folder)
                raise BlcamError(f"{name}: {where}, not a folder; choose a folder path")
            return


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def safe_name(text: str, fallback: str, strip: str = "-") -> str:
    """``text`` as a file-name part: runs of anything but ``A-Za-z0-9_.-`` become one ``-``,
    ``strip`` is trimmed from both ends, and an empty result becomes ``fallback``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip(strip) or fallback


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Iterable[str], ignore_extra: bool = False) -> str:
    """``rows`` (dicts) as CSV text with a header of ``columns``, ``\n`` line ends.

    A key outside ``columns`` is an error unless ``ignore_extra`` (for rows that carry more
    than a given file shows, e.g. a table whose readers want only some columns).
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore" if ignore_extra else "raise")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv_atomic(target: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Iterable[str],
                     ignore_extra: bool = False) -> None:
    """Write ``rows`` as CSV (:func:`csv_text`) to ``target`` atomically."""
    write_text_atomic(target, csv_text(rows, columns, ignore_extra))


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as pretty JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporary files left by a killed run; returns how many were removed."""
    removed = 0
    for path in Path(folder).rglob("*.tmp-*"):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def json_safe(obj: Any) -> Any:
    """NaN/inf → null, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
