"""Model benchmark: eager vs fused torch vs plain vs fused ONNX (``python -m benchmarks.model``)."""
