"""Training configuration: the paper's recipe as defaults, every number an option.

The whole config is stored in the checkpoint and in the model's metadata record, so a
model file says how it was trained and ``--resume`` can refuse to continue a run with a
different recipe (which would silently produce a model nobody asked for).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..device import DEVICES, is_device_name
from ..errors import BlcamError
from ..model import ARCHS, OUTPUT_STRIDES, STEMS

PRECISIONS = ("auto", "fp32", "bf16")
RESIDENT = ("auto", "on", "off")
LR_SCHEDULES = ("constant", "cosine")
MONITORS = ("auto", "last", "val_auc", "val_loss", "val_acc")
# The metrics that pick an epoch on a validation fold (never on the test split: "auto").
SELECTING_MONITORS = ("val_auc", "val_loss", "val_acc")

# Fields that may differ between a run and its resumption (they do not change the result,
# or only extend it); everything else must match the checkpoint exactly.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "resident", "progress_every_s", "compile")

# How runs recorded before a field existed trained (every patch once, a constant rate).
PRE_FIELD_VALUES = {"positive_fraction": None, "lr_schedule": "constant", "focal_gamma": 0.0, "lesion_margin": 0.0,
                    "zoom": 0.0, "appearance": 0.0}


@dataclass
class TrainConfig:
    """Everything that decides a training run (paper defaults: Section 2 of the paper)."""

    arch: str = "resnet18"
    stem: str = "paper"
    widen: float = 1.0
    epochs: int = 250
    batch_size: int = 14          # global: split evenly across DDP processes
    lr: float = 1e-3
    lr_schedule: str = "cosine"   # annealed to ~0 (epoch_lr()); 'constant': the paper's Adam at lr throughout
    crop: tuple[int, int, int] = (16, 160, 160)
    flip_p: float = 0.5           # per axis, along k (depth/slices) and i (horizontal)
    padded_crops: bool = False    # True: crops anywhere in the patch, padding included (the paper)
    output_stride: int = 16       # 8: layer4 without its stride, a twice finer lesion map (model.py)
    point_loss: float = 1.0       # weight of the point-supervision loss on the local-logit map (0: the paper)
    hard_negatives: int = 0       # rounds of hard-negative mining during training (hard_negatives.py)
    hard_negatives_per_volume: int = 4    # candidates mined per healthy training volume and round
    hard_negatives_min_score: float = 0.5  # only candidates the network scores at least this high
    point_sigma: float = 0.5      # width of the point targets, in feature spacings (point_supervision.py)
    focal_gamma: float = 0.0      # > 0: focal loss, hard examples weigh more (losses.py); 0: BCE (the paper)
    positive_fraction: float | None = None  # share of lesion patches per epoch; None: as exported (sampling.py)
    lesion_margin: float = 0.0    # share of a positive crop's size its lesion centre keeps from each face (data.py)
    zoom: float = 0.0             # > 0: crops magnified by a random factor in [1, 1 + zoom] (augment.py)
    appearance: float = 0.0       # > 0: blur, low resolution, contrast, gamma, each with this probability
    fold: int | None = None       # None: train on all training folds, validate on the test split
    device: str = "auto"
    seed: int = 0
    workers: int = 4              # DataLoader processes (only when patches are not held in memory)
    resident: str = "auto"        # hold all patches on the training device ('auto': if they fit)
    precision: str = "auto"       # 'auto': bf16 autocast on CUDA, fp32 elsewhere
    val_every: int = 1
    monitor: str = "auto"         # picks model.safetensors' epoch: see resolved_monitor()
    compile: bool = False         # torch.compile the network (CUDA; a few % faster after warm-up)
    progress_every_s: float = 30.0  # curves.png is redrawn at most this often (and at the end)

    def __post_init__(self) -> None:
        self.crop = tuple(int(v) for v in self.crop)  # type: ignore[assignment]  # validate() checks three
        self.validate()

    def validate(self) -> None:
        """Raise :class:`BlcamError` naming the first bad value."""
        checks = [
            (self.arch in ARCHS, f"--arch '{self.arch}': choose one of {', '.join(ARCHS)}"),
            (self.stem in STEMS, f"--stem '{self.stem}': choose one of {', '.join(STEMS)}"),
            (self.widen > 0, f"--widen must be positive, got {self.widen}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.lr_schedule in LR_SCHEDULES,
             f"--lr-schedule '{self.lr_schedule}': choose one of {', '.join(LR_SCHEDULES)}"),
            (len(self.crop) == 3 and min(self.crop) >= 1, f"--crop must be three positive sizes, got {self.crop}"),
            (0.0 <= self.flip_p <= 1.0, f"--flip-p must be in [0, 1], got {self.flip_p}"),
            (self.output_stride in OUTPUT_STRIDES,
             f"--output-stride {self.output_stride}: choose one of {', '.join(map(str, OUTPUT_STRIDES))}"),
            (self.point_loss >= 0, f"--point-loss must be ≥ 0, got {self.point_loss}"),
            (self.hard_negatives >= 0, f"--hard-negatives must be ≥ 0, got {self.hard_negatives}"),
            (self.hard_negatives_per_volume >= 1,
             f"--hard-negatives-per-volume must be at least 1, got {self.hard_negatives_per_volume}"),
            (0.0 <= self.hard_negatives_min_score <= 1.0,
             f"--hard-negatives-min-score must be in [0, 1], got {self.hard_negatives_min_score}"),
            (self.point_sigma > 0, f"--point-sigma must be positive, got {self.point_sigma}"),
            (self.focal_gamma >= 0, f"--focal-gamma must be ≥ 0, got {self.focal_gamma}"),
            (self.positive_fraction is None or 0.0 < self.positive_fraction < 1.0,
             f"--positive-fraction must be in (0, 1) or 'as-exported', got {self.positive_fraction}"),
            (0.0 <= self.lesion_margin < 0.5, f"--lesion-margin must be in [0, 0.5), got {self.lesion_margin}"),
            (0.0 <= self.zoom <= 1.0, f"--zoom must be in [0, 1], got {self.zoom}"),
            (0.0 <= self.appearance <= 1.0, f"--appearance must be in [0, 1], got {self.appearance}"),
            (self.fold is None or self.fold >= 0, f"--fold must be ≥ 0, got {self.fold}"),
            (is_device_name(self.device), f"--device '{self.device}': choose one of {', '.join(DEVICES)} or cuda:N"),
            (self.workers >= 0, f"--workers must be ≥ 0, got {self.workers}"),
            (self.resident in RESIDENT, f"--resident '{self.resident}': choose one of {', '.join(RESIDENT)}"),
            (self.precision in PRECISIONS, f"--precision '{self.precision}': choose one of {', '.join(PRECISIONS)}"),
            (self.val_every >= 1, f"--val-every must be at least 1, got {self.val_every}"),
            (self.monitor in MONITORS, f"--monitor '{self.monitor}': choose one of {', '.join(MONITORS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise BlcamError(message)

    def epoch_lr(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (1-based): constant (the paper), or cosine-annealed.

        Cosine annealing takes the rate from ``lr`` down towards zero over ``epochs``, one
        step per epoch. With a constant rate the last epoch's weights still jump from batch to
        batch, and the model is the last epoch (:meth:`resolved_monitor`), so a short CPU
        run ends on whatever batch came last; annealing lets it settle. A pure function of the
        epoch, so ``--resume`` continues on the same curve (``--epochs`` stretches it).
        """
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))

    def resolved_monitor(self) -> str:
        """The rule that picks the saved model's epoch, never one that looks at the test split.

        With ``--fold K`` the held-out patches are fold K of the training patients, a
        validation set: ``auto`` picks the epoch with the best ``val_auc`` there. Without a
        fold the held-out patches are the *test* split; picking an epoch by its test AUC would
        choose the model on the test set and make every test figure optimistic, so ``auto``
        keeps the last epoch (the paper's 250th) and an explicit metric is refused.
        """
        if self.fold is None:
            if self.monitor in SELECTING_MONITORS:
                raise BlcamError(f"--monitor {self.monitor}: without --fold the held-out patches are the "
                                 "test split, and choosing the model's epoch on them would tune on the "
                                 "test set; use --fold K to select on a validation fold, or --monitor last")
            return "last"
        return "val_auc" if self.monitor == "auto" else self.monitor

    def to_dict(self) -> dict:
        """Plain JSON/``weights_only``-safe types (lists, not tuples)."""
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys (newer versions) are ignored."""
        names = {f.name for f in fields(cls)}
        # Runs from before a field existed trained as that field's neutral value says.
        d = {**PRE_FIELD_VALUES, **d}
        return cls(**{k: v for k, v in d.items() if k in names})

    def recipe_differences(self, other: TrainConfig) -> list[str]:
        """Fields (besides :data:`RESUMABLE_CHANGES`) whose values differ from ``other``."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k)]
