"""BreastLesionCAM core library: weakly supervised lesion detection in 3D breast ultrasound.

This package has no Slicer and no Qt imports, so the same code runs inside Slicer (imported
from the module folder), from the ``blcam`` command line, and in the tests.
"""

__version__ = "0.1.0"
