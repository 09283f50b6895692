"""Numpy/Pillow pre- and post-processing for the dense tasks (no torch), shared by all backends."""
