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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                         check=True).stdout
    assert out.strip() == "False"


def test_unknown_command_fails_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_train_options_come_from_the_config_dataclass():
    """Every train option that names a TrainConfig field reaches the config (no hand-kept list),
    the architecture and stem choices are the model's own, and --width still means --widen."""
    from blcam.cli import build_parser
    from blcam.cli.cmd_train import config_from_args
    from blcam.model import ARCHS, STEMS
    parser = build_parser(only="train")
    args = parser.parse_args(["train", "p", "--out", "r", "--widen", "0.25", "--epochs", "3", "--val-every", "2",
                              "--hard-negatives-min-score", "0.7", "--flip-p", "0.25", "--monitor", "last"])
    config = config_from_args(args, fold=1)
    assert (config.widen, config.epochs, config.val_every, config.hard_negatives_min_score, config.flip_p,
            config.monitor, config.fold) == (0.25, 3, 2, 0.7, 0.25, "last", 1)
    assert config_from_args(parser.parse_args(["train", "p", "--out", "r", "--width", "0.5"])).widen == 0.5
    train = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions if a.dest == "arch")
    stem = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions if a.dest == "stem")
    assert set(train.choices) == set(ARCHS) and set(stem.choices) == set(STEMS)


def test_export_speaks_the_one_progress_protocol_and_failures_end_with_an_error_record(tmp_path, capsys):
    """--progress-json: only protocol records on stdout, fractions rising to 1, then done; a
    failing command's last record is the error (the same one line as on stderr)."""
    import json

    from _cohort_fixtures import small_cohort
    from blcam.cli import main
    cohort = small_cohort(tmp_path / "c", n_healthy=3, n_lesion=3, shape=(8, 24, 24))
    assert main(["export", str(cohort), "--out", str(tmp_path / "p"), "--patch", "4", "8", "8",
                 "--folds", "2", "--progress-json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [r for r in records if r["event"] == "progress"]
    assert {r["stage"] for r in progress} == {"export"}
    assert [r["done"] for r in progress] == list(range(1, progress[-1]["total"] + 1))
    assert [r["fraction"] for r in progress] == sorted(r["fraction"] for r in progress)
    assert progress[-1]["fraction"] == 1
    assert records[-1] == {"event": "done", "manifest": str(tmp_path / "p" / "manifest.csv")}
    assert main(["export", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "q"), "--progress-json"]) == 2
    out, err = capsys.readouterr()
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "error" and "missing.csv" in last["message"] and last["message"] in err
