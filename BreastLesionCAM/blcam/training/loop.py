"""``train_model``: the paper's training recipe, fast on one GPU, resumable, DDP-aware.

One epoch = every training patch once, as a random crop with random flips (parameters
from :mod:`.data`, a pure function of seed, epoch and patch), BCE on one logit, Adam.
After each epoch (or every ``val_every``) the held-out patches are scored on their centred
crops; the epoch that ``monitor`` picks (the best on a validation fold, the last when the
held-out patches are the test split) is written to ``model.safetensors`` and the full
state to ``last.pt`` for ``--resume``. On CUDA: bf16 autocast, cuDNN autotuning and patches
held in GPU memory when they fit; on CUDA and the CPU, channels_last_3d. On CPU: deterministic
algorithms, so a run and its resumption give bit-identical weights.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..axes import PathLike
from ..cam.local_logits import LocalLogitNet
from ..errors import BlcamError
from ..io.atomic import check_output_folder, make_folder, remove_stale_temporaries, write_json_atomic
from ..io.locks import LOCK_NAME, folder_lock
from ..metrics.classification import binary_summary
from ..model import MODEL_FILE, build_model, make_metadata, save_model, total_stride
from ..patches.dataset import PatchDataset, load_dataset
from ..score_calibration import sigmoid
from .appearance import random_appearance, with_appearance
from .augment import random_zooms, zoomed
from .checkpoint import LAST, BackgroundWriter, load_checkpoint, restore_rng, rng_state, save_checkpoint, snapshot
from .config import TrainConfig
from .data import (
    STREAM_TRAIN,
    PatchSource,
    batch_slices,
    centre_offset,
    crop_ranges,
    full_ranges,
    keep_lesion_inside,
    max_offsets,
    prefers_channels_last,
    random_params,
    to_network,
)
from .determinism import deterministic
from .distributed import DistContext, launched_as_main, per_rank_batch, setup
from .epoch_rules import better, check_finite
from .hard_negatives import load_mined, mine, mined_manifest, mining_epochs
from .history import plot_curves, write_history
from .losses import binary_loss
from .point_supervision import lesion_in_crop, point_sigma, point_targets
from .predict import autocast_for, bce_from_logits, predict_logits
from .resume_guard import check_same_dataset, dataset_identity, recipe_mismatch, warn_schedule_change
from .sampling import epoch_order


def split_records(ds: PatchDataset, fold: int | None) -> tuple[list[dict], list[dict], str]:
    """(training records, held-out records, name of the held-out split) for ``fold``."""
    if fold is None:
        train, held, name = ds.select(split="train"), ds.select(split="test"), "test"
    else:
        n_folds = int(ds.info["settings"]["folds"])
        if fold >= n_folds:
            raise BlcamError(f"--fold {fold}: {ds.root} has folds 0..{n_folds - 1}")
        train = ds.select(split="train", exclude_folds=[fold])
        held, name = ds.select(split="train", folds=[fold]), f"fold:{fold}"
    labels = {r["label"] for r in train}
    if labels != {0, 1}:
        raise BlcamError(f"{ds.root}: the training patches for this split have only label(s) {sorted(labels)}; "
                         "training needs lesion and healthy patches")
    return train, held, name


def train_model(dataset_root: PathLike, out_dir: PathLike, config: TrainConfig, progress: bool = True,
                on_epoch: Callable[[dict], bool | None] | None = None, resume: bool = False) -> Path:
    """Train, validate and checkpoint; returns ``out_dir/model.safetensors`` (the best model).

    ``on_epoch(record)`` is called on rank 0 after each epoch with the history row plus
    ``epochs`` and ``eta_s``; returning ``False`` stops training after that epoch (its
    checkpoint is complete), as a kill would. ``resume=True`` continues from ``last.pt``.
    Rank 0 holds the run folder's lock and a shared lock on the dataset throughout
    (:mod:`blcam.io.locks`): a second training into ``out_dir`` or an export writing the
    dataset is refused instead of mixing files.
    """
    check_output_folder(out_dir)                      # before the lock, which would create the folder
    main = launched_as_main()
    with folder_lock(dataset_root, shared=True, purpose="training on it", enabled=main), \
            folder_lock(out_dir, purpose="training into it", enabled=main):
        return _train_locked(dataset_root, out_dir, config, progress, on_epoch, resume)


def _train_locked(dataset_root: PathLike, out_dir: PathLike, config: TrainConfig, progress: bool,
                  on_epoch: Callable[[dict], bool | None] | None, resume: bool) -> Path:
    out_dir = Path(out_dir)
    ds = load_dataset(dataset_root)
    split_records(ds, config.fold)                    # bad input fails before anything is created
    max_offsets(ds.patch_size, config.crop)
    ctx, device = setup(config.device)
    try:
        _claim_run_folder(out_dir, resume, ctx)
        with deterministic(device.type == "cpu"):
            return _Trainer(ds, out_dir, config, ctx, device, progress, on_epoch).run(resume)
    finally:
        ctx.close()


# What a run writes before its first checkpoint: a run killed that early may start over.
_OWN_FILES = {"config.json", "history.csv", "history.jsonl", "curves.png", MODEL_FILE, LOCK_NAME}


def _claim_run_folder(out_dir: Path, resume: bool, ctx: DistContext) -> None:
    has_ckpt = (out_dir / LAST).is_file()
    if resume and not has_ckpt:
        raise BlcamError(f"{out_dir}: no {LAST} to resume from; drop --resume to start a new run")
    if not resume:
        if has_ckpt:
            raise BlcamError(f"{out_dir}: holds a training run; pass --resume to continue it or choose another --out")
        foreign = [p.name for p in out_dir.iterdir() if p.name not in _OWN_FILES and ".tmp-" not in p.name] \
            if out_dir.exists() else []
        if foreign:
            raise BlcamError(f"{out_dir}: folder is not empty ({', '.join(sorted(foreign)[:3])}); choose another --out")
    if ctx.is_main:
        make_folder(out_dir, "--out")
        remove_stale_temporaries(out_dir)
    ctx.barrier()


class _Trainer:
    """The state of one training run (one per process under DDP)."""

    def __init__(self, ds: PatchDataset, out_dir: Path, config: TrainConfig, ctx: DistContext, device: torch.device,
                 progress: bool, on_epoch: Callable[[dict], bool | None] | None):
        self.ds, self.out, self.cfg, self.ctx, self.device = ds, out_dir, config, ctx, device
        self.progress, self.on_epoch = progress and ctx.is_main, on_epoch
        self.train_recs, self.val_recs, self.val_split = split_records(ds, config.fold)
        self.monitor = config.resolved_monitor()
        self.batch = per_rank_batch(config.batch_size, ctx.world_size)
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        net = build_model(config.arch, config.stem, config.widen, config.output_stride).to(device)
        self.channels_last = prefers_channels_last(device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # not in torch's stubs
        self.net = net
        # Point supervision needs the local-logit map; the paper's recipe runs the net as it is.
        self.pointed = config.point_loss > 0
        trained = LocalLogitNet(net) if self.pointed else net
        self.stride = total_stride(config.stem, config.output_stride)
        # What the training step calls: the network, maybe compiled (an OptimizedModule) and DDP-wrapped.
        self.model: torch.nn.Module = cast(torch.nn.Module, torch.compile(trained)) if config.compile else trained
        if ctx.distributed:
            self.model = DistributedDataParallel(self.model, device_ids=[device.index] if self.cuda else None)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        self.loss_fn = functools.partial(binary_loss, focal_gamma=config.focal_gamma)
        self._set_training_records(self.train_recs)
        self.val_src = (PatchSource(ds, self.val_recs, config.crop, device, config.resident, config.workers)
                        if self.val_recs else None)
        self.history: list[dict] = []
        self.best: dict = {"value": None, "loss": None, "epoch": None}
        self.start_epoch = 1
        self.writer = BackgroundWriter()
        self.dataset_id = dataset_identity(ds.root)
        self.mine_at = mining_epochs(config.epochs, config.hard_negatives)
        self.mined = 0

    # -- hard-negative mining (hard_negatives.py) -----------------------------------------
    def _mine(self, round_no: int) -> None:
        """Mine one round (rank 0; a resumed run reloads a finished round) and train on it."""
        if self.ctx.is_main and not mined_manifest(self.out, round_no).is_file():
            c = self.cfg
            mine(self.net, self.ds, self.train_recs, c.crop, self.device, self.out, round_no,
                 c.hard_negatives_per_volume, c.hard_negatives_min_score, progress=self.progress)
        self.ctx.barrier()
        added = load_mined(self.out, round_no)
        self.mined += len(added)
        self._set_training_records(self.train_recs + added)

    def _set_training_records(self, records: list[dict]) -> None:
        """The patches trained on and their crop ranges (the epoch's draws: :mod:`.sampling`)."""
        c = self.cfg
        self.train_recs = records
        self.train_src = PatchSource(self.ds, records, c.crop, self.device, c.resident, c.workers)
        self.train_labels = [int(r["label"]) for r in records]
        ranges = full_ranges(len(records), self.ds.patch_size, c.crop) if c.padded_crops \
            else crop_ranges(self.ds, records, c.crop)
        self.crop_ranges = keep_lesion_inside(ranges, self.train_labels, self.ds.patch_size, c.crop, c.lesion_margin)

    # -- resume --------------------------------------------------------------------------
    def _load(self) -> dict:
        """Restore the run from ``last.pt``; returns the config it was saved with."""
        state = load_checkpoint(self.out / LAST)
        changed = recipe_mismatch(state["config"], self.cfg)
        if changed:
            raise BlcamError(f"{self.out / LAST}: cannot resume with a different recipe ({changed})")
        check_same_dataset(state.get("dataset"), self.dataset_id, self.out / LAST, warn=self.ctx.is_main)
        if state["world_size"] != self.ctx.world_size:
            raise BlcamError(f"{self.out / LAST}: run used {state['world_size']} process(es), now "
                             f"{self.ctx.world_size}; resume with the same number")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.history, self.best = list(state["history"]), dict(state["best"])
        self.start_epoch = int(state["epoch"]) + 1
        return dict(state["config"])

    # -- one epoch -----------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> tuple[float, float, int]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.epoch_lr(epoch)
        c = self.cfg
        order, repeats = epoch_order(self.train_labels, epoch, c.seed, self.ctx.rank, self.ctx.world_size,
                                     c.positive_fraction)
        offsets, flips = random_params(c.seed, STREAM_TRAIN, epoch, order, self.ds.patch_size,
                                       c.crop, c.flip_p, self.crop_ranges, repeats)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        slices = batch_slices(len(order), self.batch, merge_single=True)
        bar = tqdm(total=len(slices), desc=f"epoch {epoch}", unit="batch", leave=False, disable=not self.progress)
        where = lesion_in_crop(self.ds.patch_size, c.crop, offsets, flips)
        targets = self._point_targets(order, where) if self.pointed else None
        zooms = random_zooms(c.seed, epoch, order, c.zoom, repeats) if c.zoom > 0 else None
        looks = random_appearance(c.seed, epoch, order, c.appearance, repeats) if c.appearance > 0 else None
        batches = self.train_src.batches(order, offsets, flips, self.batch, merge_single=True)
        # Batches come in draw order; zip asks the batch generator first, so it runs to its end.
        for (x, y, _), drawn in zip(batches, slices):
            # Augmentations on grey levels in fp32, outside bf16 autocast (a bf16 blur would round
            # its output to about one grey level); only the network runs under autocast.
            x = with_appearance(zoomed(x, where, zooms, drawn), looks, drawn)
            with autocast_for(self.device, self.cfg.precision):
                out = self.model(to_network(x, self.channels_last))
            if targets is not None:                       # point supervision
                local = out.float()
                logits = local.mean(dim=(1, 2, 3))
                loss = self.loss_fn(logits, y) + self.cfg.point_loss * self.loss_fn(local, targets[drawn])
            else:
                logits = out.reshape(-1)
                loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach().double() * len(y)      # no .item(): the GPU is never stalled
            correct += ((logits.detach() > 0) == (y > 0.5)).sum()
            bar.update()
        bar.close()
        total_loss, total_correct, n = self.ctx.sum([loss_sum.item(), float(correct.item()), len(order)],
                                                    self.device)
        return total_loss / n, total_correct / n, int(n)

    def _point_targets(self, order: np.ndarray, where: np.ndarray) -> torch.Tensor:
        """Point targets of this epoch's draws (``where``: the lesion centre in each crop), in
        draw order (batches come in that order)."""
        labels = np.array([self.train_recs[r]["label"] for r in order])
        return point_targets(where, labels, self.cfg.crop, self.stride,
                             point_sigma(self.stride, self.cfg.point_sigma)).to(self.device)

    def _check_finite(self, epoch: int, what: str, values: np.ndarray) -> None:
        check_finite(values, epoch, what, self.cfg.precision, self.optimizer.param_groups[0]["lr"], self.out / LAST)

    def _validate(self, epoch: int) -> dict:
        """Centred crops of the held-out patches; scores gathered from every rank."""
        assert self.val_src is not None, "validation needs held-out patches"
        rows = list(range(self.ctx.rank, len(self.val_recs), self.ctx.world_size))
        offsets = np.tile(centre_offset(self.ds.patch_size, self.cfg.crop), (len(rows), 1))
        # Forward only: twice the training batch fits in the memory a training step needs.
        classifier = self.net if self.pointed else self.model     # one logit per crop
        logits = predict_logits(classifier, self.val_src, rows, offsets, 2 * self.batch,
                                self.cfg.precision, self.channels_last)
        parts = self.ctx.gather((rows, logits.tolist()))
        all_rows = np.concatenate([np.asarray(r, np.int64) for r, _ in parts])
        all_logits = np.concatenate([np.asarray(lg, np.float64) for _, lg in parts])
        self._check_finite(epoch, "held-out logit", all_logits)
        labels = np.array([self.val_recs[r]["label"] for r in all_rows])
        summary = binary_summary(labels, sigmoid(all_logits))
        return {"val_loss": bce_from_logits(all_logits, labels), "val_acc": summary["accuracy"],
                "val_auc": summary["auc"]}

    # -- outputs (rank 0) ----------------------------------------------------------------
    def _metadata(self, epoch: int) -> dict:
        training = {**self.cfg.to_dict(), "dataset": str(self.ds.root.resolve()), "val_split": self.val_split,
                    "epoch": epoch, "monitor": self.monitor if self.val_src else None,
                    "best_value": self.best["value"], "best_epoch": self.best["epoch"],
                    "world_size": self.ctx.world_size, "n_train": len(self.train_recs), "n_val": len(self.val_recs),
                    "hard_negatives_mined": self.mined}
        return make_metadata(self.cfg.arch, self.cfg.stem, self.cfg.widen, self.cfg.crop,
                             self.ds.patch_size, training=training, output_stride=self.cfg.output_stride,
                             spacing=None if self.ds.spacing is None else list(self.ds.spacing))

    def _plot(self) -> None:
        plot_curves(self.out / "curves.png", self.history,
                    f"{self.cfg.arch}/{self.cfg.stem}, held-out: {self.val_split}")

    def _write(self, epoch: int, is_best: bool, plot: bool) -> None:
        write_history(self.out, self.history)
        if plot:
            self._plot()
        # Everything the writer thread saves is a copy: training goes on while it writes.
        state = snapshot({"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()})
        meta = self._metadata(epoch)
        ckpt = {**state, "epoch": epoch, "config": self.cfg.to_dict(), "history": [dict(r) for r in self.history],
                "best": dict(self.best), "rng": rng_state(), "world_size": self.ctx.world_size,
                "dataset": self.dataset_id}

        def job():
            if is_best:
                save_model(self.out / MODEL_FILE, _StateOnly(state["model"]), meta)
            save_checkpoint(self.out / LAST, ckpt)
        self.writer.submit(job)

    # -- the run -------------------------------------------------------------------------
    def run(self, resume: bool) -> Path:
        saved = self._load() if resume else None
        for round_no, at in enumerate(self.mine_at):
            if at < self.start_epoch:              # mined before the checkpoint: reload (or redo) it
                self._mine(round_no)
        if self.ctx.is_main:
            write_json_atomic(self.out / "config.json", {**self.cfg.to_dict(), "val_split": self.val_split,
                                                         "world_size": self.ctx.world_size})
        if saved is not None:                       # after the folder proved writable: an error comes alone
            warn_schedule_change(saved, self.cfg, self.start_epoch - 1, self.out / LAST, warn=self.ctx.is_main)
        epochs = self.cfg.epochs
        bar = tqdm(total=epochs, initial=self.start_epoch - 1, desc="train", unit="epoch",
                   disable=not self.progress)
        spent, last_plot = [], 0.0
        try:
            for epoch in range(self.start_epoch, epochs + 1):
                t0 = time.perf_counter()
                train_loss, train_acc, n = self._train_epoch(epoch)
                train_s = time.perf_counter() - t0
                self._check_finite(epoch, "training loss", np.array([train_loss]))
                validate = self.val_src is not None and (epoch % self.cfg.val_every == 0 or epoch == epochs)
                val = self._validate(epoch) if validate else {"val_loss": None, "val_acc": None, "val_auc": None}
                spent.append(time.perf_counter() - t0)
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, **val,
                       "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": round(spent[-1], 4),
                       "samples_per_s": round(n / train_s, 2)}
                self.history.append(row)
                is_best = (self.val_src is None or self.monitor == "last"
                           or (validate and better(val, self.best, self.monitor)))
                if is_best:
                    self.best = {"value": val.get(self.monitor), "loss": val["val_loss"], "epoch": epoch}
                stop = False
                if self.ctx.is_main:
                    now = time.perf_counter()
                    plot = epoch == epochs or epoch == self.start_epoch or now - last_plot >= self.cfg.progress_every_s
                    last_plot = now if plot else last_plot
                    self._write(epoch, is_best, plot)
                    eta = float(np.mean(spent[-10:])) * (epochs - epoch)
                    bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.2f}",
                                    val_auc="-" if val["val_auc"] is None else f"{val['val_auc']:.3f}")
                    bar.update()
                    if self.on_epoch is not None:
                        stop = self.on_epoch({**row, "epochs": epochs, "eta_s": round(eta, 1),
                                              "is_best": is_best}) is False
                if self.ctx.sum([float(stop)], self.device)[0] > 0:
                    if self.ctx.is_main:
                        self._plot()
                    break
                if epoch in self.mine_at:
                    self._mine(self.mine_at.index(epoch))
                    # The best model is chosen among those trained on the final training set.
                    self.best = {"value": None, "loss": None, "epoch": None}
        finally:
            bar.close()
            self.writer.close()
        self.ctx.barrier()
        return self.out / MODEL_FILE


class _StateOnly:
    """Hands :func:`save_model` a CPU snapshot instead of the live (maybe GPU) network."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state
