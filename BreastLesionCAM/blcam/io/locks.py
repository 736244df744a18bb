"""Advisory folder locks: one writer per run, dataset or detect folder, and no reader of a
dataset while an export writes it.

Without them two ``blcam train --out RUN`` at once both "succeed" and leave the history of
one beside the model of the other. The lock is an OS advisory lock (``fcntl.flock``) on
``FOLDER/.blcam.lock``, held for the life of the command: the kernel drops it when the
process ends, however it ends, so a killed command never leaves a stale lock to clean up.
The holder writes who it is (pid, host, command, start time) into the file so that a
refused command can name it. That text is written in place, not by rename, because the
lock lives on the file's inode: a rename would give the next process a different file to
lock. A holder deletes the file when it is done (only when no one else holds it), and an
acquirer checks that the file it locked is still the one at the path, so deleting is safe.

Writers (export, train's run folder, detect's output folder) take the lock exclusively;
training takes it *shared* on its dataset, so any number of trainings can read one
dataset, but not while an export writes it. A shared lock never creates the dataset
folder, and a dataset folder the user may not write is read without a lock: an export
could not write there either.

Windows has no ``flock``: ``msvcrt.locking`` locks bytes past the holder text instead
(Windows byte locks are mandatory, so the text itself stays unlocked and readable). An
exclusive holder locks the writer byte and every reader byte; a shared holder takes the
writer byte for a moment (so no writer holds it), one free reader byte, and lets the
writer byte go.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from ..axes import PathLike
from ..errors import BlcamError

LOCK_NAME = ".blcam.lock"
_WIN_WRITER = 1 << 20           # byte offsets of the Windows byte locks (past any holder text)
_WIN_READERS = 256
_WIN_READER_HELD: dict[int, int] = {}   # descriptor → the reader byte it holds (Windows)
_BINARY = getattr(os, "O_BINARY", 0)   # Windows: no newline translation in the holder text


def holder_text() -> str:
    """Who holds the lock: one line a refused command can quote."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = f"python -m {program.parent.name}" if program.name == "__main__.py" else program.name
    command = " ".join([name, *(shlex.quote(a) for a in sys.argv[1:])])
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}\n"


class FolderBusy(BlcamError):
    """Another process holds the folder's lock; the message names it."""


def _os_lock(fd: int, shared: bool) -> bool:
    """Try to lock ``fd`` without waiting; ``False`` if another process holds it."""
    try:
        import fcntl
    except ImportError:
        return _windows_lock(fd, shared)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _os_unlock_if_alone(fd: int, shared: bool) -> bool:
    """Upgrade to exclusive (only possible if no one else holds the lock); ``True`` if alone."""
    try:
        import fcntl  # noqa: F401  (probe only: POSIX, else Windows)
    except ImportError:
        return not shared or _windows_upgrade(fd)
    return not shared or _os_lock(fd, shared=False)


def _windows_range(fd: int, start: int, count: int, lock: bool) -> bool:
    import msvcrt
    os.lseek(fd, start, os.SEEK_SET)
    try:  # (typeshed declares msvcrt's names on Windows only; the tests fake the module elsewhere)
        msvcrt.locking(fd, msvcrt.LK_NBLCK if lock else msvcrt.LK_UNLCK, count)  # type: ignore[attr-defined]
    except OSError:
        return False
    return True


def _windows_lock(fd: int, shared: bool) -> bool:
    if not _windows_range(fd, _WIN_WRITER, 1, True):
        return False
    if not shared:
        if _windows_range(fd, _WIN_WRITER + 1, _WIN_READERS, True):
            return True
        _windows_range(fd, _WIN_WRITER, 1, False)
        return False
    try:
        for n in range(_WIN_READERS):
            if _windows_range(fd, _WIN_WRITER + 1 + n, 1, True):
                _WIN_READER_HELD[fd] = n
                return True
        return False
    finally:
        _windows_range(fd, _WIN_WRITER, 1, False)


def _windows_upgrade(fd: int) -> bool:
    """A shared holder is alone if it can lock the writer byte and every other reader byte."""
    mine = _WIN_READER_HELD.pop(fd, None)
    if not _windows_range(fd, _WIN_WRITER, 1, True):
        return False
    others = [n for n in range(_WIN_READERS) if n != mine and _windows_range(fd, _WIN_WRITER + 1 + n, 1, True)]
    if len(others) == _WIN_READERS - (mine is not None):
        return True
    for n in others:
        _windows_range(fd, _WIN_WRITER + 1 + n, 1, False)
    _windows_range(fd, _WIN_WRITER, 1, False)
    return False


def _read_holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "a process that has not yet written its name"


def _open(path: Path, create: bool) -> int | None:
    """A descriptor for the lock file; ``None`` where it may not be created (read-only data)."""
    try:
        return os.open(path, os.O_RDWR | _BINARY | (os.O_CREAT if create else 0), 0o666)
    except FileNotFoundError:
        if create:
            raise
        return None
    except PermissionError:
        with contextlib.suppress(OSError):
            return os.open(path, os.O_RDONLY | _BINARY)
        return None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return None
        raise


@contextlib.contextmanager
def folder_lock(folder: PathLike, shared: bool = False, purpose: str = "writing",
                enabled: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block, or raise :class:`FolderBusy` naming the holder.

    Exclusive locks create ``folder`` (and remove it again, empty, if it was created here);
    ``enabled=False`` (DDP ranks other than 0) takes no lock: rank 0 holds it for the job.
    """
    folder = Path(folder)
    if not enabled:
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise BlcamError(f"{folder}: exists and is not a folder")
    created = False
    if not shared and not folder.exists():
        try:
            folder.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise BlcamError(f"{folder}: cannot create the folder ({exc.strerror})") from None
    path = folder / LOCK_NAME
    fd = _acquire(path, shared, purpose)
    try:
        yield
    finally:
        if fd is not None:
            _release(path, fd, shared)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()          # only if empty: a command that failed at once leaves nothing


def _acquire(path: Path, shared: bool, purpose: str) -> int | None:
    """Lock ``path`` (retrying if a finishing holder deleted it meanwhile) and sign it."""
    for _ in range(100):
        try:
            fd = _open(path, create=not shared or path.parent.is_dir())
        except OSError as exc:
            raise BlcamError(f"{path}: cannot create the lock file ({exc.strerror})") from None
        if fd is None:
            return None
        if not _os_lock(fd, shared):
            os.close(fd)
            raise FolderBusy(f"{path.parent}: in use by another blcam command ({_read_holder(path)}); "
                             f"wait for it to finish before {purpose} there")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            _sign(fd)
            return fd
        _WIN_READER_HELD.pop(fd, None)
        os.close(fd)                    # a finishing holder deleted this file: lock the new one
    raise BlcamError(f"{path}: the lock file keeps being replaced; is another program deleting it?")


def _sign(fd: int) -> None:
    """Write the holder text in place (see the module docstring for why not atomically)."""
    with contextlib.suppress(OSError):   # a read-only lock file still locks; it just stays unsigned
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, holder_text().encode("utf-8"))


def _release(path: Path, fd: int, shared: bool) -> None:
    try:
        if _os_unlock_if_alone(fd, shared):
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)                    # closing drops every lock this descriptor holds
