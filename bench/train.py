"""Training throughput: blcam's pipeline against a plain MONAI + PyTorch loop, in one run.

    python bench/train.py                                   # GPU defaults: the paper's setting
    python bench/train.py --stems paper fast --json out.json
    python bench/train.py --device cpu --crop 8 64 64 --patch 12 96 96 --patches 42 \
        --epochs 2 --baseline-steps 6 --baseline-workers 1  # a small CPU setting

Measured in the same process, on the same synthetic patch dataset (uint8 speckle-like
noise exported with ``blcam export``: content does not change the speed):

* **plain loop** — what a first MONAI + PyTorch script does: a ``Dataset`` that loads each
  patch file, MONAI ``RandSpatialCrop`` + ``RandFlip`` (k and i), a ``DataLoader``
  (``--baseline-workers``, shuffle, no pinning), fp32, default memory format, no cuDNN
  autotuning; Adam + BCE on the same network;
* **blcam** — ``blcam.training.train_model`` itself, end to end (bf16 autocast,
  channels_last_3d, cuDNN autotuning on CUDA; patches held on the device and cropped there;
  validation on the held-out split and checkpoints every epoch included in the wall time);
* **data only** — both data paths without the network.

Prints samples/s, the ratios, and the projected wall time of the paper's full protocol
(``--protocol-epochs`` × the training patches); ``--json`` saves everything.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from blcam.intensity import network_input
from blcam.io.volume import Geometry, write_volume
from blcam.model import build_model
from blcam.patches.dataset import load_dataset
from blcam.patches.export import ExportSettings, export_dataset
from blcam.training import TrainConfig, train_model
from blcam.training.data import STREAM_TRAIN, PatchSource, random_params, to_network
from blcam.training.distributed import resolve_device

LESIONS_PER_VOLUME = 5
TEST_FRACTION = 0.3


def make_dataset(work: Path, n_train: int, patch, seed: int = 0) -> Path:
    """A cohort of noise volumes whose export has about ``n_train`` training patches (cached)."""
    out = work / f"patches-{n_train}-{'x'.join(map(str, patch))}"
    if (out / "manifest.csv").is_file():
        return out
    total = math.ceil(n_train / (1 - TEST_FRACTION))
    per_class = max(2, math.ceil(total / (2 * LESIONS_PER_VOLUME)))
    pk, pj, pi = patch
    shape = (pk + 4, pj + 20, (pi // 2) * LESIONS_PER_VOLUME + pi // 2 + 20)
    geom = Geometry(size=shape[::-1], spacing=(0.2, 0.1, 0.5), origin=(0.0, 0.0, 0.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    cohort_dir = work / f"cohort-{n_train}-{'x'.join(map(str, patch))}"
    cohort_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(2 * per_class):
        name, lesion = f"B{p:04d}", p < per_class
        write_volume(cohort_dir / f"{name}.nrrd", rng.integers(0, 256, shape, dtype=np.uint8), geom)
        ann = ""
        if lesion:
            ann = f"{name}.csv"
            centres = [(shape[0] // 2, shape[1] // 2, pi // 2 + 10 + n * (pi // 2)) for n in range(LESIONS_PER_VOLUME)]
            pts = geom.index_to_lps(np.asarray(centres, float)[:, ::-1])
            with (cohort_dir / ann).open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows([["x", "y", "z"], *pts.tolist()])
        rows.append([name, f"{name}.nrrd", "lesion" if lesion else "healthy", ann])
    with (cohort_dir / "cohort.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["patient", "volume", "label", "annotation"], *rows])
    settings = ExportSettings(tuple(patch), LESIONS_PER_VOLUME, TEST_FRACTION, None, seed)   # 5 folds, fewer if small
    export_dataset(cohort_dir / "cohort.csv", out, settings, jobs=max(1, (os.cpu_count() or 2) // 2),
                   progress=False)
    shutil.rmtree(cohort_dir)
    return out


class PlainPatches(torch.utils.data.Dataset):
    """The plain loop's data: load the patch file, MONAI random crop + flips, fp32."""

    def __init__(self, ds, records, crop):
        from monai.transforms import Compose, RandFlip, RandSpatialCrop
        self.ds, self.records = ds, records
        self.transform = Compose([RandSpatialCrop(tuple(crop), random_size=False),
                                  RandFlip(prob=0.5, spatial_axis=0), RandFlip(prob=0.5, spatial_axis=2)])

    def __len__(self):
        return len(self.records)

    def __getitem__(self, n):
        rec = self.records[n]
        x = network_input(self.ds.load(rec, mmap=False).astype(np.float32))[None]
        x = np.ascontiguousarray(np.asarray(self.transform(x)), dtype=np.float32)
        return torch.from_numpy(x), torch.tensor([float(rec["label"])])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_plain(ds, records, args, stem, device) -> dict:
    """Samples/s of the plain training loop and of its DataLoader alone."""
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = False          # blcam's run turns it on process-wide
    loader = torch.utils.data.DataLoader(PlainPatches(ds, records, args.crop), batch_size=args.batch_size,
                                         shuffle=True, num_workers=args.baseline_workers, drop_last=True,
                                         persistent_workers=args.baseline_workers > 0)
    model = build_model(args.arch, stem, 1.0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps, warm = args.baseline_steps, args.warmup_steps
    done, t0 = 0, None
    while done < steps + warm:
        for x, y in loader:
            if done == warm:
                _sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps + warm:
                break
    _sync(device)
    train_sps = steps * args.batch_size / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    for x, _ in loader:
        n += len(x)
        if n >= steps * args.batch_size:
            break
    data_sps = n / (time.perf_counter() - t0)
    return {"train_samples_per_s": train_sps, "data_samples_per_s": data_sps}


def bench_blcam(dataset: Path, work: Path, args, stem, device) -> dict:
    """``train_model`` end to end; steady-state samples/s from its own history."""
    run = work / f"run-{stem}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = TrainConfig(arch=args.arch, stem=stem, epochs=args.epochs, batch_size=args.batch_size,
                      crop=tuple(args.crop), device=args.device, seed=args.seed, workers=args.workers,
                      compile=args.compile)
    t0 = time.perf_counter()
    train_model(dataset, run, cfg, progress=False)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text(encoding="utf-8").splitlines()]
    steady = rows[1:] or rows                       # epoch 1 carries cuDNN autotuning / compilation
    per_epoch = statistics.mean(r["epoch_s"] for r in steady)
    setup = wall - sum(r["epoch_s"] for r in rows)
    return {"train_samples_per_s": statistics.median(r["samples_per_s"] for r in steady),
            "epoch_wall_s": per_epoch, "setup_s": setup, "wall_s": wall,
            "projected_protocol_s": setup + args.protocol_epochs * per_epoch}


def bench_blcam_data(ds, records, args, device) -> dict:
    """The resident data path alone: crop + flip + normalise on the device."""
    src = PatchSource(ds, records, args.crop, device, resident="auto", workers=args.workers)
    order = np.random.default_rng(0).permutation(len(records))
    off, flips = random_params(0, STREAM_TRAIN, 1, order, ds.patch_size, args.crop, 0.5)
    for x, _, _ in src.batches(order[:args.batch_size], off, flips, args.batch_size):   # warm-up
        to_network(x, device.type == "cuda")
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    for x, _, _ in src.batches(order, off, flips, args.batch_size):
        to_network(x, device.type == "cuda")
        n += len(x)
    _sync(device)
    return {"data_samples_per_s": n / (time.perf_counter() - t0), "resident": src.resident}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto|cuda|cpu|mps (default: auto)")
    p.add_argument("--arch", default="resnet18", help="resnet10|resnet18 (default: resnet18)")
    p.add_argument("--stems", nargs="+", default=["paper"], help="stems to measure (default: paper)")
    p.add_argument("--crop", type=int, nargs=3, default=[16, 160, 160], help="crop k j i (default: 16 160 160)")
    p.add_argument("--patch", type=int, nargs=3, default=[28, 280, 280], help="patch k j i (default: 28 280 280)")
    p.add_argument("--batch-size", type=int, default=14, help="batch (default: 14)")
    p.add_argument("--patches", type=int, default=650, help="training patches (default: 650)")
    p.add_argument("--epochs", type=int, default=3, help="blcam epochs measured (default: 3)")
    p.add_argument("--protocol-epochs", type=int, default=250, help="epochs of the projected protocol (default: 250)")
    p.add_argument("--baseline-steps", type=int, default=40, help="timed plain-loop steps (default: 40)")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed plain-loop steps first (default: 5)")
    p.add_argument("--baseline-workers", type=int, default=4, help="plain-loop DataLoader workers (default: 4)")
    p.add_argument("--workers", type=int, default=4, help="blcam DataLoader workers if not resident (default: 4)")
    p.add_argument("--compile", action="store_true", help="also torch.compile in blcam (default: off)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=os.environ.get("BLCAM_BENCH_WORK", "/tmp/blcam-bench-train"),
                   help="scratch folder for the dataset and runs")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    work = Path(args.work)
    t0 = time.perf_counter()
    dataset = make_dataset(work, args.patches, args.patch, args.seed)
    ds = load_dataset(dataset)
    records = ds.select(split="train")
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} "
            f"({torch.get_num_threads()} threads)", "torch": torch.__version__, "arch": args.arch,
            "crop": args.crop, "patch": args.patch, "batch_size": args.batch_size, "train_patches": len(records),
            "val_patches": len(ds.select(split="test")), "dataset_s": round(time.perf_counter() - t0, 1),
            "baseline_workers": args.baseline_workers}
    print(json.dumps(info), flush=True)
    results = {"info": info, "stems": {}}
    data_blcam = bench_blcam_data(ds, records, args, device)
    for stem in args.stems:
        plain = bench_plain(ds, records, args, stem, device)
        ours = bench_blcam(dataset, work, args, stem, device)
        results["stems"][stem] = {"plain": plain, "blcam": ours,
                                  "speedup": ours["train_samples_per_s"] / plain["train_samples_per_s"]}
        print(f"[{stem} stem] plain loop {plain['train_samples_per_s']:.2f} samples/s | blcam "
              f"{ours['train_samples_per_s']:.2f} samples/s | speed-up {results['stems'][stem]['speedup']:.2f}x | "
              f"blcam epoch wall (incl. validation, checkpoints) {ours['epoch_wall_s']:.2f} s | projected "
              f"{args.protocol_epochs}-epoch protocol {ours['projected_protocol_s'] / 60:.1f} min", flush=True)
    plain_data = results["stems"][args.stems[0]]["plain"]["data_samples_per_s"]
    results["data_only"] = {"plain": plain_data, "blcam": data_blcam["data_samples_per_s"],
                            "blcam_resident": data_blcam["resident"],
                            "ratio": data_blcam["data_samples_per_s"] / plain_data}
    print(f"[data only] plain DataLoader {plain_data:.1f} samples/s | blcam "
          f"{'resident' if data_blcam['resident'] else 'loader'} {data_blcam['data_samples_per_s']:.1f} samples/s | "
          f"ratio {results['data_only']['ratio']:.1f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
