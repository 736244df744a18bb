"""The ``blcam`` entry point: every command has help, and light commands start light."""

import subprocess
import sys

import pytest

from blcam.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_explains_its_options(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "default" in capsys.readouterr().out


def test_export_and_phantom_do_not_import_torch():
    """Registering only the requested command keeps data commands free of torch start-up."""
    code = ("import sys; from blcam.cli import build_parser; build_parser(only='export'); "
            "build_parser(only='phantom'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True).stdout
    assert out.strip() == "False"


def test_unknown_command_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
