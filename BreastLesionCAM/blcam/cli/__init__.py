"""The ``blcam`` command line: the researcher's interface and the Slicer module's worker.

Each sub-command lives in its own ``cmd_*.py`` module exposing ``register(subparsers)``;
:data:`COMMANDS` lists them in the order ``--help`` shows them.

Whatever goes wrong, the user gets one line on stderr and a non-zero exit status:

* 2: a :class:`BlcamError` (bad input or a refused operation; the message names the culprit),
  or an ``OSError`` that no check caught (the line names the file and the sub-command);
* 1: an unexpected exception (a bug): its type and message;
* 130: interrupted (Ctrl-C).

The global ``--debug`` flag also prints the traceback, for bug reports. A command run with
``--progress-json`` also gets the failure as its last stdout record (:mod:`.progress`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import BlcamError

COMMANDS = ["phantom", "export", "train", "evaluate", "cv", "ensemble", "detect", "pictures", "evaluate-detection",
            "calibrate", "demo"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that sub-command's module is imported.

    Command modules import what they run (``train`` pulls in torch and MONAI, seconds of
    start-up), so ``blcam export ...`` registers ``export`` alone and stays quick; the full
    list is built for ``blcam --help`` and for unknown commands, where argparse must list them.
    """
    parser = argparse.ArgumentParser(
        prog="blcam", description="Weakly supervised lesion detection in 3D breast ultrasound "
        "(one centre point per lesion → 3D ResNet → Grad-CAM heatmaps and lesion candidates).")
    parser.add_argument("--version", action="version", version=f"blcam {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the Python traceback (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [only] if only in COMMANDS else COMMANDS:
        importlib.import_module(f"{__name__}.cmd_{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"blcam {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if args.debug:
            traceback.print_exc()
        code, message = describe_failure(exc, args.command)
        print(f"blcam {args.command}: {message}", file=sys.stderr)
        if getattr(args, "progress_json", False):
            from .progress import ProgressEmitter
            ProgressEmitter(True).error(message)
        return code


def describe_failure(exc: Exception, command: str) -> tuple[int, str]:
    """``(exit status, one-line message)`` for an exception that ended ``command``."""
    if isinstance(exc, BlcamError):
        return 2, f"error: {one_line(str(exc))}"
    if isinstance(exc, OSError):
        files = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or one_line(str(exc)) or type(exc).__name__
        return 2, f"error: {files or 'a file'}: {reason} (while running '{command}')"
    detail = one_line(str(exc))
    return 1, (f"internal error: {type(exc).__name__}{': ' + detail if detail else ''} "
               "(rerun with 'blcam --debug ...' for the traceback)")


def one_line(text: str) -> str:
    """Join a multi-line message (library errors often have several) into one line."""
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def add_hit_options(p: argparse.ArgumentParser) -> None:
    """``--masks`` and ``--hit-mm``: what makes a candidate hit a lesion (evaluate-detection, calibrate)."""
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="folder of lesion label maps named like the volumes, e.g. a phantom's masks/ "
                   "(default: the cohort's 'mask' column, else centres only)")
    p.add_argument("--hit-mm", type=float, default=10.0,
                   help="without a mask, a candidate within this distance of a centre hits the lesion (default: 10)")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1, with a message naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def fraction(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be in [0, 1)")
    return value
