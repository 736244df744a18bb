"""Benchmark whole-volume Detect: the sliding-window Grad-CAM baseline against the fast path.

For each volume size, each method runs in a fresh process (so its peak memory is its own):

- **sliding** — ``--method sliding``: MONAI GradCAM on every crop-sized window (16×160×160
  by default), 50 % overlap, Gaussian blending (:mod:`blcam.cam.sliding`);
- **slab** — ``--method fast`` (default ``--context slab``): tiled forward passes over slabs of
  the crop's depth every ``patch − crop`` slices (12), CAM of the final linear layer
  (:mod:`blcam.cam.dense`), tiles sized to ``--max-memory-gb``;
- **volume** — ``--method fast --context volume``: one tiled forward pass over the volume.

Both times include the intensity normalisation and the full-size [0, 1] heatmap; candidate
extraction is timed separately (it is the same for both). The volume is uint8 noise with the
geometry of the given shape: content does not change the speed. Large volumes make the
sliding baseline take hours on a CPU, so by default it is timed over its first
``--sliding-windows`` windows *on the full-size volume* (all full-size buffers allocated,
so its peak memory is real) and its total is extrapolated from the per-window time; the
output marks such numbers as estimates. ``--sliding-windows 0`` runs it to the end.

Peak memory: the process's peak RSS on the CPU (``ru_maxrss``), ``torch.cuda.max_memory_
allocated`` on CUDA. The network is a freshly initialised model of the chosen architecture
unless ``--model`` names a trained one (weights do not change the speed).

    python bench/detect.py                       # 48×320×320 and the ABUS size, CPU
    python bench/detect.py --device cuda --json bench/detect-h100.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

ABUS = (354, 682, 865)   # largest TDSC-ABUS 2023 volume (k, j, i)
ABUS_SPACING = (0.2, 0.073, 0.476)   # its voxel size in mm (i, j, k)
# --preset abus: a model trained at 0.5 mm with the paper's patch and crop in millimetres
# (28×280×280 and 16×160×160 voxels of ABUS_SPACING are 13.3×20.4×56 and 7.6×11.7×32 mm).
ABUS_PRESET = {"sizes": ["x".join(map(str, ABUS))], "methods": ["resampled", "slab", "volume"],
               "model_spacing": [0.5, 0.5, 0.5], "crop": [15, 23, 64], "patch": [27, 41, 112]}


class _Stop(Exception):
    pass


def _model(args):
    import torch

    from blcam.model import build_model, load_model, total_stride
    if args.model:
        model, meta = load_model(args.model, args.device)
        return model, tuple(meta["crop"]), tuple(meta["patch"]), total_stride(meta["stem"])
    torch.manual_seed(0)
    model = build_model(args.arch, args.stem, args.widen).to(args.device).eval()
    return model, tuple(args.crop), tuple(args.patch), total_stride(args.stem)


def _child(method: str, shape, args, queue) -> None:
    """One measurement in a fresh process; puts a result dict on ``queue``."""
    import numpy as np
    import torch

    from blcam.cam.dense import DenseLesionMapper, default_slab_step
    from blcam.cam.sliding import sliding_lesion_map, window_count
    from blcam.detect.candidates import find_candidates
    from blcam.intensity import normalise_volume
    from blcam.io.volume import Geometry

    if args.threads:
        torch.set_num_threads(args.threads)
    model, crop, patch, stride = _model(args)
    volume = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    geometry = Geometry(tuple(reversed(shape)), (0.2, 0.073, 0.476), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = {"method": method, "shape": list(shape), "voxels": int(np.prod(shape)), "device": args.device}
    start = time.perf_counter()
    stored = normalise_volume(volume)
    del volume                       # as blcam detect does: only the normalised copy stays
    if method in ("slab", "volume"):
        mapper = DenseLesionMapper(model, crop, args.device, args.max_memory_gb, method,
                                   default_slab_step(crop, patch))
        lmap = mapper(stored, progress=args.progress)
        if cuda:
            torch.cuda.synchronize()
        result["seconds"] = time.perf_counter() - start
        t = time.perf_counter()
        cands, _ = find_candidates(lmap, geometry)
        result["candidate_seconds"] = time.perf_counter() - t
    else:
        total = window_count(shape, crop)
        limit = args.sliding_windows if 0 < args.sliding_windows < total else total
        marks = {}

        def on_step(_, done, _total):
            if cuda:
                torch.cuda.synchronize()
            marks.setdefault(done, time.perf_counter())
            if done >= limit and limit < total:
                raise _Stop
        try:
            sliding_lesion_map(model, stored, crop, stride, args.device, args.batch_size,
                               progress=args.progress, on_step=on_step)
            result["seconds"] = time.perf_counter() - start
            result["estimated"] = False
        except _Stop:
            first, last = marks[min(marks)], marks[max(marks)]
            per_window = (last - first) / max(1, max(marks) - min(marks))
            result["seconds"] = (first - start) + per_window * (total - min(marks))
            result["estimated"] = True
            result["seconds_per_window"] = per_window
        result.update(windows=total, windows_run=min(limit, total))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    if cuda:
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
        result["gpu"] = torch.cuda.get_device_name()
    queue.put(result)


def _resampled_child(method: str, shape, args, queue) -> None:
    """End to end as ``blcam detect`` runs it (read → resample to the model's spacing → map →
    candidates and refinement → heatmap back on the input's grid → files and pictures)."""
    import numpy as np
    import torch

    from blcam.detect.pipeline import Detector, DetectSettings, VolumeJob
    from blcam.io.resample import grid_at_spacing
    from blcam.io.volume import read_geometry

    if args.threads:
        torch.set_num_threads(args.threads)
    files = _abus_files(shape, args)
    settings = DetectSettings(max_memory_gb=args.max_memory_gb, overlays=0, refine=args.refine)
    start = time.perf_counter()
    detector = Detector(files["model"], settings, args.device)
    row = detector.run(VolumeJob(files["volume"], "abus"), files["out"])
    result = {"method": method, "shape": list(shape), "voxels": int(np.prod(shape)), "device": args.device,
              "seconds": time.perf_counter() - start, "model_spacing": list(args.model_spacing),
              "model_shape": list(grid_at_spacing(read_geometry(files["volume"]), args.model_spacing).shape)}
    result.update({k: row[k] for k in ("resample_seconds", "map_seconds", "refine_seconds", "snap_seconds",
                                          "pictures_seconds")})
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    queue.put(result)


def _abus_files(shape, args) -> dict:
    """An ABUS-geometry volume (oblique, flipped, anisotropic voxels; uint8 speckle-like noise,
    uncompressed as scanners write it) and a fresh model that records ``--model-spacing``."""
    from pathlib import Path

    import numpy as np
    import torch

    from blcam.io.volume import Geometry, write_volume
    from blcam.model import build_model, make_metadata, save_model
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    volume = root / f"abus_{'x'.join(map(str, shape))}.nrrd"
    if not volume.is_file():
        c, s = np.cos(np.radians(12)), np.sin(np.radians(12))
        direction = (np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.diag([1.0, 1.0, -1.0])).ravel()
        geometry = Geometry(tuple(reversed(shape)), ABUS_SPACING, (0.0, 0.0, 0.0), tuple(map(float, direction)))
        array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        write_volume(volume, array, geometry, compress=False)
    model = root / "model.safetensors"
    torch.manual_seed(0)
    net = build_model(args.arch, args.stem, args.widen)
    save_model(model, net, make_metadata(args.arch, args.stem, args.widen, args.crop, args.patch,
                                         spacing=list(args.model_spacing)))
    out = root / "out"
    out.mkdir(exist_ok=True)
    return {"volume": volume, "model": model, "out": out}


def measure(method: str, shape, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    target = _resampled_child if method == "resampled" else _child
    proc = ctx.Process(target=target, args=(method, shape, args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"method": method, "shape": list(shape), "error": f"exit code {proc.exitcode}"}
    return queue.get()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["48x320x320", "x".join(map(str, ABUS))],
                   help="volume shapes k×j×i (default: 48x320x320 and the ABUS size 354x682x865)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--model", default=None, help="a trained model file (default: fresh network, see --arch)")
    p.add_argument("--arch", default="resnet10", help="architecture without --model (default: resnet10)")
    p.add_argument("--stem", default="paper", help="stem without --model (default: paper)")
    p.add_argument("--widen", type=float, default=1.0, help="width factor without --model (default: 1.0)")
    p.add_argument("--crop", type=int, nargs=3, default=[16, 160, 160],
                   help="crop without --model (default: 16 160 160)")
    p.add_argument("--patch", type=int, nargs=3, default=[28, 280, 280],
                   help="patch without --model: sets the slab step (default: 28 280 280)")
    p.add_argument("--max-memory-gb", type=float, default=8.0, help="fast path memory budget (default: 8)")
    p.add_argument("--sliding-windows", type=int, default=40,
                   help="windows timed before extrapolating the sliding baseline; 0 = run all (default: 40)")
    p.add_argument("--batch-size", type=int, default=1, help="sliding windows per Grad-CAM batch (default: 1)")
    p.add_argument("--methods", nargs="+", default=["sliding", "slab", "volume"],
                   choices=["sliding", "slab", "volume", "resampled"],
                   help="'resampled': the whole of blcam detect with a model at --model-spacing "
                   "(default: sliding slab volume)")
    p.add_argument("--preset", choices=["abus"], default=None,
                   help="abus: the ABUS size, rows resampled (end to end at 0.5 mm) + slab and volume at "
                   "native resolution, the paper's patch and crop in mm")
    p.add_argument("--model-spacing", type=float, nargs=3, default=[0.5, 0.5, 0.5], metavar=("SI", "SJ", "SK"),
                   help="the model's voxel size for 'resampled' (mm, i j k; default: 0.5 0.5 0.5)")
    p.add_argument("--refine", type=int, default=3, help="candidates refined in 'resampled' (default: 3)")
    p.add_argument("--workdir", default="/tmp/blcam-bench-detect",
                   help="where 'resampled' writes its volume, model and outputs")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (default: torch's choice)")
    p.add_argument("--progress", action="store_true", help="show the tqdm bars of each run")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.preset == "abus":
        given = {a.dest for a in p._actions
                 if a.dest in ABUS_PRESET and f"--{a.dest.replace('_', '-')}" in (argv or sys.argv)}
        for key, value in ABUS_PRESET.items():
            if key not in given:
                setattr(args, key, value)
    results = []
    for size in args.sizes:
        shape = tuple(int(v) for v in size.lower().split("x"))
        row = {}
        for method in args.methods:
            r = measure(method, shape, args)
            results.append(r)
            row[method] = r
            if "error" in r:
                print(f"{size:>14} {method:>8}: failed ({r['error']})", flush=True)
                continue
            est = (f" (estimated from {int(r['windows_run'])} of {int(r['windows'])} windows)"
                   if r.get("estimated") else "")
            mem = f"peak RSS {r['peak_rss_gb']:.2f} GB"
            if "peak_gpu_gb" in r:
                mem += f", GPU {r['peak_gpu_gb']:.2f} GB"
            parts = "" if method != "resampled" else (
                f" (resample {r['resample_seconds']:.1f} s, read+resample+map {r['map_seconds']:.1f} s, refine "
                f"{r['refine_seconds']:.1f} s, snap {r['snap_seconds']:.1f} s, "
                f"contact sheet {r['pictures_seconds']:.1f} s; "
                f"model grid {'x'.join(map(str, r['model_shape']))})")
            print(f"{size:>14} {method:>9}: {r['seconds']:9.1f} s{est}{parts}; {mem}", flush=True)
        for fast in ("slab", "volume"):
            if all(m in row and "seconds" in row[m] for m in ("sliding", fast)):
                print(f"{size:>14}  speed-up of {fast} over sliding: "
                      f"{row['sliding']['seconds'] / row[fast]['seconds']:.1f}×", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"argv": sys.argv[1:], "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
