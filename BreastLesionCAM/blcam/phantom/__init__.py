"""Synthetic automated breast ultrasound (ABUS) volumes with known lesions.

Real ABUS data with lesion annotations cannot be shipped with the project, yet every part
of the pipeline (patch export, training, Grad-CAM, detection, the Slicer module) needs data
that behaves like it: speckle with the right statistics, breast anatomy along the beam,
lesions that shadow or enhance, look-alikes that fool a naive detector, annotations that are
a clicked centre point in LPS or RAS, and volumes with awkward geometry. This package makes
such data from physics (see :mod:`.speckle`) and anatomy (:mod:`.anatomy`), deterministically
from a seed.

Python API::

    rng = np.random.default_rng(0)
    image, mask, lesions = make_volume(rng, (24, 96, 96), lesions=["cyst"])
    make_cohort("out", patients=10, seed=0, jobs=4)
    abus = PRESETS["abus"]        # a real scan's size, oblique and flipped
    make_cohort("big", patients=1, shape=abus.shape, spacing=abus.spacing,
                direction=abus.direction)
"""

from .cohort_writer import make_cohort
from .geometry import ABUS_DIRECTION
from .lesions import KINDS, MIMICS, Lesion, annotate
from .presets import PRESETS, Preset
from .speckle import Transducer, envelope, form_bmode
from .volume import DEFAULT_SHAPE, DEFAULT_SPACING, LesionSpec, PhantomVolume, make_volume, simulate_volume

__all__ = ["make_cohort", "make_volume", "simulate_volume", "LesionSpec", "PhantomVolume",
           "Lesion", "annotate", "KINDS", "MIMICS", "Transducer", "envelope", "form_bmode",
           "DEFAULT_SHAPE", "DEFAULT_SPACING", "ABUS_DIRECTION", "PRESETS", "Preset"]
