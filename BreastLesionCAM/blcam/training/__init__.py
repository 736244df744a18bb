"""Training the patch classifier (paper, Section 2): ``TrainConfig`` + ``train_model``.

Modules: ``config`` (the recipe), ``data`` (crops/flips from device memory or a
DataLoader), ``loop`` (the epoch loop, validation, best/last files), ``checkpoint``
(``weights_only``-safe resumable state), ``distributed`` (device choice, torchrun/DDP),
``history`` (CSV/JSON lines logs and the curves plot), ``predict`` (scoring patches).
"""

from .config import TrainConfig
from .loop import MODEL_FILE, train_model

__all__ = ["TrainConfig", "train_model", "MODEL_FILE"]
