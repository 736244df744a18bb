"""Device names (``blcam.device``): one vocabulary for the CLI, the training config and the panel.

The panel lists the CUDA GPUs by name and MPS on Apple Silicon; this CPU-only machine checks
the listing it really has, and the GPU labels through the function that formats given names.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from blcam.cli import build_parser
from blcam.device import (
    DEVICES,
    available_devices,
    check_device_name,
    concrete_device,
    device_choices,
    is_device_name,
    resolve_device,
)
from blcam.errors import BlcamError


def test_this_computer_lists_auto_and_cpu():
    torch = pytest.importorskip("torch")
    choices = available_devices()
    names = [name for name, _ in choices]
    assert names[:2] == ["auto", "cpu"]
    assert len(names) == 2 + torch.cuda.device_count() + (1 if torch.backends.mps.is_available() else 0)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert choices == [("auto", "auto (cpu)"), ("cpu", "cpu")]


def test_gpus_are_listed_by_index_and_name_and_auto_says_what_it_picks():
    choices = device_choices(["NVIDIA H200", "NVIDIA RTX A6000"])
    assert choices == [("auto", "auto (cuda:0)"), ("cpu", "cpu"), ("cuda:0", "cuda:0 (NVIDIA H200)"),
                       ("cuda:1", "cuda:1 (NVIDIA RTX A6000)")]
    assert device_choices([], mps=True) == [("auto", "auto (mps)"), ("cpu", "cpu"), ("mps", "mps (Apple GPU)")]


def test_concrete_device_resolves_auto_and_plain_cuda():
    assert concrete_device("auto", ["auto", "cpu"]) == "cpu"
    assert concrete_device("auto", ["auto", "cpu", "mps"]) == "mps"
    assert concrete_device("auto", ["auto", "cpu", "cuda:0", "cuda:1"]) == "cuda:0"
    assert concrete_device("cuda", ["auto", "cpu"]) == "cuda:0"
    assert concrete_device("cuda:1", ["auto", "cpu"]) == "cuda:1"


def test_names_are_checked_without_torch_and_the_message_names_the_value():
    assert all(is_device_name(n) for n in DEVICES + ("cuda:0", "cuda:12"))
    assert not any(is_device_name(n) for n in ("gpu", "cuda:", "cuda:-1", "CUDA", "cuda:0 (NVIDIA H200)", 0, None))
    with pytest.raises(BlcamError, match="--device 'gpu': choose one of auto, cpu, cuda, mps or cuda:N"):
        check_device_name("gpu")
    code = "import sys, blcam.device; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", ["train", "detect", "evaluate", "demo"])
def test_every_command_takes_an_indexed_gpu_and_refuses_other_names(command, capsys):
    parser = build_parser(only=command)
    positional = {"train": ["patches", "--out", "run"], "detect": ["m", "v", "--out", "o"],
                  "evaluate": ["m", "p"], "demo": []}[command]
    assert parser.parse_args([command, *positional, "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([command, *positional, "--device", "gpu0"])
    assert exc.value.code == 2
    assert "'gpu0' is not a device" in capsys.readouterr().err


def test_training_config_and_resolution_check_the_name_and_the_hardware(monkeypatch):
    torch = pytest.importorskip("torch")
    from blcam.training.config import TrainConfig
    from blcam.training.distributed import setup
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(BlcamError, match="--device 'gpu'"):
        TrainConfig(device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BlcamError, match="--device cuda:1: no CUDA GPU is visible"):
            resolve_device("cuda:1")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(BlcamError, match=f"only {count} CUDA GPU"):
            resolve_device(f"cuda:{count}")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: one indexed GPU for every rank is refused
    with pytest.raises(BlcamError, match="under torchrun"):
        setup("cuda:1")
