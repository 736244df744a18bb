"""Patch datasets: extraction around lesion centres, patient-level splits, export, reading."""
