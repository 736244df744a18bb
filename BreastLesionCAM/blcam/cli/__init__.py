"""The ``blcam`` command line: the researcher's interface and the Slicer module's worker.

Each sub-command lives in its own ``cmd_*.py`` module exposing ``register(subparsers)``;
:data:`COMMANDS` lists them in the order ``--help`` shows them. A :class:`BlcamError`
becomes one line on stderr and exit status 2; an interrupted command exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import BlcamError

COMMANDS = ["phantom", "export", "train", "evaluate", "cv", "detect", "evaluate-detection", "demo"]


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [only] if only in COMMANDS else COMMANDS:
        importlib.import_module(f"{__name__}.cmd_{name.replace('-', '_')}").register(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(only=command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BlcamError as exc:
        print(f"blcam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"blcam {args.command}: interrupted", file=sys.stderr)
        return 130


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


if __name__ == "__main__":
    sys.exit(main())
