"""Named training recipes: the project's default and an exact reproduction of the paper.

``blcam train --recipe NAME`` starts from one of these and then applies every option the
user gave explicitly. The README says why the default departs from the paper:

* ``paper``: the paper's method as published: random crops anywhere in the patch (padding
  included), BCE on the crop logit only; Detect reads the layer4 Grad-CAM (= CAM) map.
* ``default``: crops kept inside the volume (padding beside border lesions leaked the
  label), plus point supervision of the local-logit map
  (:mod:`blcam.training.point_supervision`): the click says where the lesion is in every
  positive crop, so the map is taught to peak there instead of anywhere in the crop; and a
  cosine learning rate: the model is the last epoch (never one picked on the test split), and
  annealing makes the last epoch a settled one rather than wherever the last batch left it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .errors import BlcamError
from .training.config import TrainConfig

# The default recipe is TrainConfig's own defaults (so the library and the CLI agree);
# 'paper' sets every field in which they depart from the paper back to the paper's value.
RECIPES: dict[str, dict] = {
    "default": {},
    "paper": {"padded_crops": True, "point_loss": 0.0, "lr_schedule": "constant"},
}


def recipe_config(name: str, **changes: Any) -> TrainConfig:
    """The recipe's :class:`TrainConfig` with ``changes`` applied on top."""
    if name not in RECIPES:
        raise BlcamError(f"--recipe '{name}': choose one of {', '.join(RECIPES)}")
    return replace(TrainConfig(), **{**RECIPES[name], **changes})
