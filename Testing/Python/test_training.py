"""Training end to end on CPU: it learns, its files are complete, a killed run resumes exactly."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from _training_fixtures import (
    CROP,
    PATCH,
    SUBPROCESS_ENV,
    blob_dataset,
    one_thread,  # noqa: F401 (autouse)
    tiny_config,
    trained_run,
)
from blcam.evaluation import evaluate_model
from blcam.model import load_model, read_metadata
from blcam.training.checkpoint import LAST, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def test_training_learns_and_writes_a_complete_run(tmp_path_factory):
    run = trained_run(tmp_path_factory)
    cfg = tiny_config()
    for name in ("model.safetensors", LAST, "history.csv", "history.jsonl", "curves.png", "config.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp-*"))
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, cfg.epochs + 1))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert len((run / "history.csv").read_text(encoding="utf-8").splitlines()) == cfg.epochs + 1
    meta = read_metadata(run / "model.safetensors")
    assert meta["crop"] == list(CROP) and meta["patch"] == list(PATCH) and meta["arch"] == "resnet10"
    assert meta["normalisation"]["method"] == "volume_percentile_uint8"
    t = meta["training"]
    assert t["val_split"] == "fold:0" and t["lr"] == cfg.lr and t["batch_size"] == cfg.batch_size
    assert t["best_epoch"] == max(rows, key=lambda r: (r["val_auc"], -r["val_loss"]))["epoch"]
    model, _ = load_model(run / "model.safetensors")
    assert model(torch.zeros(1, 1, *CROP)).shape == (1, 1)
    # Held-out *patients* (test split: never trained on, never used to pick the model).
    result = evaluate_model(run, blob_dataset(tmp_path_factory), split="test", progress=False)
    centre = result["modes"]["centre"]
    assert result["n_positive"] >= 6 and result["n"] - result["n_positive"] >= 6
    assert centre["auc"] >= 0.9, centre
    assert centre["accuracy"] >= 0.8, centre


def _train_cmd(data, out, cfg, resume=False):
    # "--width": the old spelling of --widen, still accepted (a wrong width would change the weights)
    cmd = [PYTHON, "-m", "blcam", "train", str(data), "--out", str(out), "--arch", cfg.arch, "--width",
           str(cfg.widen), "--crop", *map(str, cfg.crop), "--epochs", str(cfg.epochs), "--batch-size",
           str(cfg.batch_size), "--fold", str(cfg.fold), "--device", "cpu", "--workers", "0",
           "--seed", str(cfg.seed), "--progress-json"]
    return cmd + (["--resume"] if resume else [])


def test_sigkilled_run_resumes_to_identical_weights(tmp_path_factory, tmp_path):
    """Kill ``blcam train`` with SIGKILL after epoch 2's checkpoint, resume: same weights as a
    run that was never interrupted (same epochs, Adam state, crops and flips)."""
    data, cfg = blob_dataset(tmp_path_factory), tiny_config()
    straight = load_checkpoint(trained_run(tmp_path_factory) / LAST)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **SUBPROCESS_ENV}
    proc = subprocess.Popen(_train_cmd(data, out, cfg), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, encoding="utf-8", env=env)
    try:
        for line in proc.stdout:
            event = json.loads(line)
            assert event["event"] == "progress" and event["stage"] == "epoch", event
            if event["epoch"] == 2:
                break
        deadline = time.time() + 120
        while time.time() < deadline:                 # checkpoints are written on a background thread
            if (out / LAST).is_file() and load_checkpoint(out / LAST)["epoch"] >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out / LAST)["epoch"]
    assert 2 <= killed_at < cfg.epochs
    done = subprocess.run(_train_cmd(data, out, cfg, resume=True), capture_output=True, text=True, encoding="utf-8",
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "progress"] == list(range(killed_at + 1, cfg.epochs + 1))
    assert events[-1] == {"event": "done", "model": str(out / "model.safetensors")}
    resumed = load_checkpoint(out / LAST)
    assert resumed["epoch"] == straight["epoch"] == cfg.epochs
    assert straight["model"].keys() == resumed["model"].keys()
    for k, v in straight["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    for n, st in straight["optimizer"]["state"].items():
        assert all(torch.equal(st[k], resumed["optimizer"]["state"][n][k]) for k in st)
    assert _without_timing(resumed["history"]) == _without_timing(straight["history"])
    assert len((out / "history.jsonl").read_text(encoding="utf-8").splitlines()) == cfg.epochs


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("epoch_s", "samples_per_s")} for r in rows]


def test_torchrun_two_processes_gloo(tmp_path_factory, tmp_path):
    """The same command under torchrun: DDP on CPU (gloo), only rank 0 reports and writes."""
    data = blob_dataset(tmp_path_factory)
    cfg = tiny_config(epochs=2)
    out = tmp_path / "ddp"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", *_train_cmd(data, out, cfg)[2:]]
    env = {**os.environ, **SUBPROCESS_ENV}
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["progress", "progress", "done"]   # rank 1 printed nothing
    assert [e["fraction"] for e in events[:2]] == [0.5, 1.0]
    meta = read_metadata(out / "model.safetensors")
    assert meta["training"]["world_size"] == 2
    ckpt = load_checkpoint(out / LAST)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2
    assert all(r["train_acc"] is not None for r in ckpt["history"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "curves.png", "history.csv", "history.jsonl", LAST, "model.safetensors"])


def test_training_fills_no_fresh_memory_and_gets_the_same_weights_as_with_filling(tmp_path_factory, tmp_path,
                                                                                 monkeypatch):
    """Training switches off torch's filling of uninitialised memory (a debugging aid that cost
    about a tenth of a CPU step) and restores it; a run that keeps the filling on gets the very same
    weights, so no training kernel reads memory it did not write."""
    import torch.utils.deterministic as det

    from blcam.training import determinism, loop, train_model
    seen = []
    assert det.fill_uninitialized_memory and not torch.are_deterministic_algorithms_enabled()
    train_model(blob_dataset(tmp_path_factory), tmp_path / "off", tiny_config(epochs=2), progress=False,
                on_epoch=lambda rec: seen.append((det.fill_uninitialized_memory,
                                                  torch.are_deterministic_algorithms_enabled())))
    assert seen == [(False, True)] * 2
    assert det.fill_uninitialized_memory and not torch.are_deterministic_algorithms_enabled()
    plain = determinism.deterministic

    @contextlib.contextmanager
    def filling(enabled):
        with plain(enabled):
            det.fill_uninitialized_memory = True
            yield
    monkeypatch.setattr(loop, "deterministic", filling)
    filled = []
    train_model(blob_dataset(tmp_path_factory), tmp_path / "on", tiny_config(epochs=2), progress=False,
                on_epoch=lambda rec: filled.append(det.fill_uninitialized_memory))
    assert filled == [True, True]
    off, on = load_checkpoint(tmp_path / "off" / LAST), load_checkpoint(tmp_path / "on" / LAST)
    for k, v in off["model"].items():
        assert torch.equal(v, on["model"][k]), k


def test_on_epoch_returning_false_stops_after_a_complete_epoch(tmp_path_factory, tmp_path):
    """How a caller (the Slicer module's Stop) ends training early: files stay consistent."""
    from blcam.training import train_model
    seen = []
    model = train_model(blob_dataset(tmp_path_factory), tmp_path / "run", tiny_config(epochs=3), progress=False,
                        on_epoch=lambda rec: seen.append(rec) or False)
    assert [r["epoch"] for r in seen] == [1] and seen[0]["epochs"] == 3 and seen[0]["eta_s"] >= 0
    assert model.is_file() and load_checkpoint(tmp_path / "run" / LAST)["epoch"] == 1
    assert len((tmp_path / "run" / "history.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_without_a_fold_the_test_split_never_picks_the_model(tmp_path_factory, tmp_path):
    """The held-out split of a run without --fold is the test split: its AUC is recorded for
    the curves, but the saved model is the last epoch, and asking to select on it is refused
    (by the library and by the CLI, before anything is written)."""
    import pytest
    from safetensors.torch import load_file

    from blcam.errors import BlcamError
    from blcam.training import train_model
    data = blob_dataset(tmp_path_factory)
    run = tmp_path / "run"
    train_model(data, run, tiny_config(fold=None, epochs=3), progress=False)
    meta = read_metadata(run / "model.safetensors")["training"]
    assert meta["val_split"] == "test" and meta["monitor"] == "last" and meta["best_epoch"] == 3
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(r["val_auc"] is not None for r in rows)            # still measured, for the curves
    saved, last = load_file(run / "model.safetensors"), load_checkpoint(run / LAST)["model"]
    assert all(torch.equal(saved[k], last[k]) for k in saved)     # the last epoch's weights
    with pytest.raises(BlcamError, match="test split"):
        train_model(data, tmp_path / "picked", tiny_config(fold=None, monitor="val_auc"), progress=False)
    cli = subprocess.run([sys.executable, "-m", "blcam", "train", str(data), "--out", str(tmp_path / "cli"),
                          "--monitor", "val_auc", "--epochs", "1"], capture_output=True, text=True, encoding="utf-8",
                         env={**os.environ, **SUBPROCESS_ENV, "PYTHONPATH": str(ROOT / "BreastLesionCAM")})
    assert cli.returncode == 2 and "--fold" in cli.stderr and not (tmp_path / "cli").exists()


def test_a_diverging_run_stops_with_the_epoch_and_keeps_the_last_finite_one(tmp_path_factory, tmp_path):
    """A loss or held-out logit that is not finite ends the run with an error naming the epoch
    (not a traceback from the AUC), before that epoch is written: last.pt keeps the one before."""
    import pytest

    from blcam.errors import BlcamError
    from blcam.training import train_model
    data = blob_dataset(tmp_path_factory)
    run = tmp_path / "run"
    train_model(data, run, tiny_config(epochs=1), progress=False)
    state = load_checkpoint(run / LAST)
    state["model"] = {k: (v.fill_(float("nan")) if k.endswith("fc.weight") else v) for k, v in state["model"].items()}
    save_checkpoint(run / LAST, state)
    with pytest.raises(BlcamError, match=r"epoch 2: .* not finite: training diverged .* keeps epoch 1"):
        train_model(data, run, tiny_config(epochs=2), progress=False, resume=True)
    assert load_checkpoint(run / LAST)["epoch"] == 1
