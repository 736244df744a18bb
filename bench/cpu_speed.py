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

Last, ONNX Runtime: the mapper's whole network (its three fused stages and the 1×1×1 head)
is exported to ONNX and one slab batch, the unit of work of the slab context, is timed in
torch and in ONNX Runtime's CPU provider with the same thread count. It runs where
``onnxruntime`` and ``onnx`` are importable (they are not project dependencies: the row says
whether adding them would pay), and is skipped with a note otherwise.

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
    onnx_row(DenseLesionMapper(model, args.crop, "cpu", context="slab"), stored, default_threads)
    return 0


def onnx_row(mapper: DenseLesionMapper, stored: np.ndarray, threads: int) -> None:
    """Time one slab batch through torch and through ONNX Runtime (same network, same input)."""
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"{'ONNX Runtime':>34}: skipped (pip install onnxruntime onnx to measure it)")
        return
    import copy
    import tempfile

    from blcam.cam.dense import SLAB_BATCH
    from blcam.intensity import network_input
    net = torch.nn.Sequential(*[s.net for s in mapper.stages]).eval()     # as the mapper holds it
    exported = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    depth = mapper.crop[0]
    starts = mapper.slab_starts(stored.shape[0])[:SLAB_BATCH]
    block = torch.from_numpy(np.stack([stored[s:s + depth] for s in starts if s + depth <= stored.shape[0]]))
    x = network_input(block.float())[:, None].contiguous()
    with torch.inference_mode():
        times = []
        for _ in range(2):
            t = time.perf_counter()
            ref = net(x.contiguous(memory_format=torch.channels_last_3d)).float().numpy()
            times.append(time.perf_counter() - t)
    torch_s = times[-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "map.onnx")
        torch.onnx.export(exported, (x,), path, input_names=["x"], output_names=["logit"], dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        times = []
        for _ in range(2):
            t = time.perf_counter()
            out = session.run(None, feed)[0]
            times.append(time.perf_counter() - t)
    ort_s = times[-1]
    print(f"{'torch, one slab batch':>34}: {torch_s:7.2f} s  ({tuple(x.shape)} fp32, channels_last_3d)")
    print(f"{'ONNX Runtime ' + ort.__version__ + ', same batch':>34}: {ort_s:7.2f} s  "
          f"({torch_s / ort_s:4.2f}× torch's speed; max |Δ local logit| {float(np.max(np.abs(out - ref))):.2e})",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
