"""Soak test of a running stack (``python -m benchmarks.soak``)."""
