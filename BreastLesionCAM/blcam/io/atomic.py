"""Atomic file writes: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the complete old file, the complete new
file, or nothing: never half of one. The temporary name carries the process id, so two
processes writing the same target never share a temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator


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
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffixes)] if suffixes else target.name
    tmp = target.with_name(f"{stem}.tmp-{os.getpid()}{suffixes}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, obj) -> None:
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
