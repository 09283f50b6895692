"""Load benchmark of a running stack over REST, gRPC and v2 (``python -m benchmarks.load``)."""
