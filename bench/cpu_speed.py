"""What makes the CPU lesion map faster on the CPU it runs on (issue 11, item 4).

Times the fast path's forward pass (:class:`blcam.cam.dense.DenseLesionMapper`, slab
context) on one volume shape under each setting, in one process, each twice (the first pass
warms oneDNN's kernel caches and is discarded), and prints each setting's time as a ratio to
the default (float32, channels_last_3d, torch's own thread count):

* ``bf16``: bfloat16 autocast on the CPU (pays only where the CPU has AVX-512-BF16 or AMX);
* ``contiguous``: the default NCDHW layout instead of channels_last_3d;
* ``threads=N``: ``torch.set_num_threads(N)`` for each N up to the core count.

The map is also compared with the default's: the largest local-logit difference, against
the bf16 bound (each stored activation rounded once by at most 2⁻⁹ of itself).

    python bench/cpu_speed.py --shape 337 100 346      # an ABUS volume at 0.5 mm
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "BreastLesionCAM"))
from blcam.cam.dense import DenseLesionMapper  # noqa: E402
from blcam.model import build_model  # noqa: E402


def bf16_supported() -> bool:
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs=3, default=[337, 100, 346], metavar=("K", "J", "I"))
    p.add_argument("--arch", default="resnet10")
    p.add_argument("--widen", type=float, default=0.5)
    p.add_argument("--crop", type=int, nargs=3, default=[15, 23, 64])
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = build_model(args.arch, "paper", args.widen).eval()
    stored = np.random.default_rng(0).integers(0, 256, args.shape, dtype=np.uint8)
    cores = os.cpu_count() or 1
    default_threads = torch.get_num_threads()
    settings = [("default (fp32, channels_last_3d)", {}, default_threads),
                ("bf16 autocast", {"cpu_bf16": True}, default_threads),
                ("contiguous layout", {"channels_last": False}, default_threads)]
    settings += [(f"threads={n}", {}, n) for n in range(1, cores + 1) if n != default_threads]
    print(f"shape {'x'.join(map(str, args.shape))}, {args.arch} width {args.widen}, crop {args.crop}; "
          f"{cores} cores, torch threads {default_threads}, CPU bf16 instructions: {bf16_supported()}")
    base_time, base_grid = None, None
    for name, options, threads in settings:
        torch.set_num_threads(threads)
        mapper = DenseLesionMapper(model, args.crop, "cpu", context="slab", **options)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            grid = mapper.logit_grid(stored)
            times.append(time.perf_counter() - t)
        seconds = times[-1]
        if base_time is None:
            base_time, base_grid = seconds, grid
        diff = float(np.max(np.abs(grid - base_grid)))
        print(f"{name:>34}: {seconds:7.2f} s  ({base_time / seconds:4.2f}× the default's speed; "
              f"max |Δ local logit| {diff:.2e}, spread {float(np.ptp(base_grid)):.2e})", flush=True)
    torch.set_num_threads(default_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
