"""care-serve: CARE vision transformers served over REST and gRPC on CPUs and ARM."""

__version__ = "0.1.0"
