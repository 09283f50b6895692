"""Training CARE models from the standard dataset formats into model-store packages.

``care_serve.offline.training.pipeline.run_training`` is the whole pipeline behind
``care-serve train``: read and cache the dataset, build the network, train
(resumable), export the fused ONNX, write the package and evaluate it.
"""
