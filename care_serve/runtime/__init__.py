"""Torch-free runtime helpers (ONNX Runtime sessions)."""
