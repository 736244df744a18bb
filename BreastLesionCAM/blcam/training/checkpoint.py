"""The resumable training checkpoint: plain tensors, numbers and lists, never pickled objects.

``last.pt`` holds everything a killed run needs to continue exactly where it stopped:
weights (incl. BatchNorm statistics), Adam's moments and step counts, the epoch, the RNG
states, the history and the best metric so far. It is written with ``torch.save`` but
contains only types that ``torch.load(weights_only=True)`` accepts, and it is only ever
read that way: a checkpoint carrying a malicious pickle is refused and its payload never
runs. Writes are atomic, and happen on a background thread from a CPU snapshot so the
GPU keeps training while ~0.4 GB (resnet18 + Adam) go to disk.
"""

from __future__ import annotations

import pickle
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..axes import PathLike
from ..errors import BlcamError
from ..io.atomic import atomic_path

FORMAT = "blcam-checkpoint-v1"
LAST = "last.pt"


def snapshot(obj: Any) -> Any:
    """A detached CPU copy of a (nested) state: later training steps cannot change it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


def rng_state() -> dict:
    """Torch's global generator states (CPU and every CUDA device)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: PathLike, state: dict) -> None:
    """Atomically ``torch.save`` a checkpoint dict (already snapshotted to CPU)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; anything else is refused, not executed."""
    path = Path(path)
    if not path.is_file():
        raise BlcamError(f"{path}: no checkpoint to resume from")
    if not zipfile.is_zipfile(path):
        # torch.save always writes a zip archive; anything else (a text file, a truncated
        # copy) would otherwise be reported by the unpickler as a refused object.
        raise BlcamError(f"{path}: not a readable checkpoint (not a PyTorch zip archive; truncated or "
                         "another kind of file?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BlcamError(f"{path}: refused to load: the checkpoint contains objects other than "
                         f"tensors and plain data ({_refusal_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a text or truncated file fails anywhere in the unpickler
        raise BlcamError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                         f"{_first_line(exc) or 'corrupt'})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BlcamError(f"{path}: not a BreastLesionCAM training checkpoint")
    return state


def _refusal_reason(exc: Exception) -> str:
    """The line of PyTorch's refusal that says *what* was refused. Its other lines advise
    retrying with ``weights_only`` off, i.e. running the file's code: never passed on."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln]
    reason = named[0].split(". ")[0].removeprefix("WeightsUnpickler error: ") if named else "unsupported object"
    return reason if "weights_only" not in reason else "unsupported object"


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else ""


class BackgroundWriter:
    """Runs one write at a time on a thread; a new job waits for the previous one.

    An exception in a write is re-raised on the training thread at the next ``submit`` or
    at ``close``, so a full disk stops training instead of losing checkpoints silently.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()

        def run():
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="blcam-checkpoint", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    close = wait
