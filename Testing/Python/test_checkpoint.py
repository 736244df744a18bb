"""Checkpoint and model files: plain data only, malicious pickles refused, runs not clobbered."""

import shutil
from pathlib import Path

import pytest
import torch

from _training_fixtures import (
    blob_dataset,
    one_thread,  # noqa: F401 (autouse)
    tiny_config,
    trained_run,
)
from blcam.cli import main
from blcam.errors import BlcamError
from blcam.evaluation import evaluate_model
from blcam.training import train_model
from blcam.training.checkpoint import LAST, load_checkpoint


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _malicious(path: Path, marker: Path) -> None:
    torch.save({"format": "blcam-checkpoint-v1", "model": {"w": torch.zeros(1)}, "x": _Payload(marker)}, path)


def test_checkpoint_holds_only_plain_data(tmp_path_factory):
    run = trained_run(tmp_path_factory)
    state = torch.load(run / LAST, map_location="cpu", weights_only=True)
    assert state["epoch"] == tiny_config().epochs and state["config"]["arch"] == "resnet10"
    assert {"model", "optimizer", "rng", "history", "best", "world_size"} <= state.keys()
    assert all(isinstance(v, torch.Tensor) for v in state["model"].values())


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, tmp_path_factory, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned.txt"
    run.mkdir()
    _malicious(run / LAST, marker)
    with pytest.raises(BlcamError, match="refused to load"):
        load_checkpoint(run / LAST)
    data = blob_dataset(tmp_path_factory)
    assert main(["train", str(data), "--out", str(run), "--resume", "--device", "cpu", "--arch", "resnet10",
                 "--widen", "0.25", "--crop", "8", "32", "32", "--workers", "0"]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(run / LAST, weights_only=False)
    assert marker.read_text(encoding="utf-8") == "pwned"


def test_malicious_model_file_is_refused(tmp_path, tmp_path_factory):
    marker = tmp_path / "pwned.txt"
    model = tmp_path / "model.safetensors"
    _malicious(model, marker)
    with pytest.raises(BlcamError, match="not a BreastLesionCAM model file"):
        evaluate_model(model, blob_dataset(tmp_path_factory), progress=False)
    assert not marker.exists()


def test_resume_refuses_another_recipe_and_new_runs_refuse_a_used_folder(tmp_path_factory, capsys):
    data, run = blob_dataset(tmp_path_factory), trained_run(tmp_path_factory)
    with pytest.raises(BlcamError, match=r"different recipe \(lr: 0.001 → 0.01\)"):
        train_model(data, run, tiny_config(lr=0.01, epochs=5), progress=False, resume=True)
    with pytest.raises(BlcamError, match="pass --resume"):
        train_model(data, run, tiny_config(), progress=False)
    # A finished run resumed with the same recipe has nothing left to do.
    before = (run / LAST).stat().st_mtime_ns
    assert train_model(data, run, tiny_config(), progress=False, resume=True) == run / "model.safetensors"
    assert (run / LAST).stat().st_mtime_ns == before
    with pytest.raises(BlcamError, match="no last.pt to resume from"):
        train_model(data, run.parent / "fresh", tiny_config(), progress=False, resume=True)


def test_resuming_with_more_epochs_warns_that_the_cosine_rate_is_relaid(tmp_path_factory, tmp_path, capsys):
    """``--resume --epochs N`` extends a run, but a cosine rate then jumps to the new curve: said on stderr."""
    data, finished = blob_dataset(tmp_path_factory), trained_run(tmp_path_factory)
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    capsys.readouterr()
    train_model(data, run, tiny_config(epochs=5), progress=False, resume=True)
    err = capsys.readouterr().err
    assert "laid out over 4 epochs and is now laid out over 5: epoch 5 trains at lr 9.55e-05, after 0.000146" in err
    assert len(load_checkpoint(run / LAST)["history"]) == 5
    # The same length again (or a constant rate) continues the same curve: no warning.
    train_model(data, run, tiny_config(epochs=5), progress=False, resume=True)
    assert "laid out" not in capsys.readouterr().err
