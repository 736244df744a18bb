"""BreastLesionCAM's Slicer module library (the module file ``BreastLesionCAM.py`` stays thin).

``Logic`` and everything it imports run with ``slicer-core`` alone (no Qt); ``Widget`` and
``Dependencies`` are the Slicer-application side.
"""
