"""One training step on the CPU in each memory layout and precision, as ratios measured in one run.

    python bench/train_layout.py                       # the demo's network and crops
    python bench/train_layout.py --arch resnet18 --widen 1 --crop 16 64 64

What ``blcam train`` does on the CPU is the first row: float32 in channels_last_3d
(:func:`blcam.training.data.prefers_channels_last`), deterministic algorithms on, without
torch's filling of fresh memory (``blcam.training.determinism``). The others are what
it would cost with that filling (torch's default under deterministic algorithms), in the
default NCDHW layout, and with bf16 autocast (``--precision bf16``), which runs on oneDNN's
native bf16 kernels only on CPUs that have them (AVX-512-BF16 / AMX) and is emulated, slowly,
elsewhere. Each row is a full step of the point-supervised network (forward, the local-logit
loss, backward, Adam), the median of ``--steps`` timed steps after two untimed ones; the rows
run interleaved so a noisy machine slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "BreastLesionCAM"))

from blcam.cam.local_logits import LocalLogitNet  # noqa: E402
from blcam.model import build_model  # noqa: E402

SETTINGS = {  # name: (channels_last, bf16, fill fresh memory)
    "fp32, channels_last_3d (blcam)": (True, False, False),
    "fp32, channels_last_3d, memory filled": (True, False, True),
    "fp32, contiguous NCDHW": (False, False, False),
    "bf16 autocast, channels_last_3d": (True, True, False),
}


def make_step(args: argparse.Namespace, channels_last: bool, bf16: bool, fill: bool):
    """A closure running one training step of a fresh network; returns its seconds."""
    torch.manual_seed(0)
    net = build_model(args.arch, "paper", args.widen, 16)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)  # type: ignore[call-overload]
    model = LocalLogitNet(net).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(args.batch_size, 1, *args.crop).contiguous(memory_format=layout)

    def step() -> float:
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
        t = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            local = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(local.float(), torch.zeros_like(local.float()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t
    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet10", help="resnet10|resnet18 (default: resnet10, the demo's)")
    p.add_argument("--widen", type=float, default=0.5, help="width factor (default: 0.5, the demo's)")
    p.add_argument("--crop", type=int, nargs=3, default=[16, 32, 48], help="crop k j i (default: the demo's)")
    p.add_argument("--batch-size", type=int, default=14, help="batch (default: 14, the paper's)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per setting (default: 12)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)          # as blcam train on the CPU
    steps = {name: make_step(args, *flags) for name, flags in SETTINGS.items()}
    for step in steps.values():       # warm-up: oneDNN picks and caches its kernels
        step(), step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(step())
    base = statistics.median(times[next(iter(SETTINGS))])
    print(f"{args.arch} width {args.widen}, batch {args.batch_size} × {'×'.join(map(str, args.crop))}, "
          f"{torch.get_num_threads()} threads; median of {args.steps} steps")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>38}: {median:6.3f} s/step   {base / median:5.2f}× blcam's speed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
