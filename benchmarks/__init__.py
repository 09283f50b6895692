"""Benchmarks that are commands of their own (not part of the installed service)."""
