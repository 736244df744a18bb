"""What an epoch's figures decide: whether it becomes the model, and whether training diverged.

Both are pure functions of the numbers the training loop just measured, kept apart from the
loop (:mod:`.loop`) that measures them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import BlcamError


def better(val: dict, best: dict, monitor: str) -> bool:
    """Does this validation improve on the best so far? Ties on AUC/accuracy (common on
    small held-out sets) go to the lower loss; ``nan`` never improves; anything beats none."""
    def key(v: float | None, loss: float | None) -> tuple[float, ...] | None:
        if v is None or math.isnan(v):
            return None
        if monitor == "val_loss":
            return (-v,)
        return (v, -(loss if loss is not None and math.isfinite(loss) else math.inf))
    old, new = key(best.get("value"), best.get("loss")), key(val[monitor], val["val_loss"])
    if best.get("epoch") is None or old is None:
        return True
    return new is not None and new > old


def check_finite(values: np.ndarray, epoch: int, what: str, precision: str, lr: float, last: Path) -> None:
    """Stop with a clear error when training diverged. Called before ``epoch`` is written, so
    the checkpoint ``last`` keeps the last finite epoch to resume from."""
    bad = int((~np.isfinite(values)).sum())
    if bad:
        kept = f"{last} keeps epoch {epoch - 1} to resume from" if epoch > 1 else "nothing was saved"
        raise BlcamError(f"epoch {epoch}: {bad} {what} value(s) are not finite: training diverged "
                         f"(precision {precision}, lr {lr:.3g}); {kept}. Try --precision fp32 or a lower --lr")
