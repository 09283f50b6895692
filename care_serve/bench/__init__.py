"""Benchmarks: the model benchmark (``model_bench``) and the load benchmark."""
