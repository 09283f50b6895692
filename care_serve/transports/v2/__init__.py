"""The Open Inference Protocol (KServe v2 / Triton) as a thin transport over the data plane.

``codec`` (tensors: datatypes, JSON and raw bytes), ``model_io`` (each model's v2
inputs and outputs), ``protocol`` (the shared operations), ``http_codec`` + ``rest``
(REST under ``/v2``) and ``grpc_servicer`` (``inference.GRPCInferenceService``).
"""
