"""Evaluation metrics shared by patch classification (training, Table 2) and detection.

Plain NumPy so the Slicer module and the detection pipeline can import them without torch
or scikit-learn; every function states how it treats ties and degenerate inputs.
"""
