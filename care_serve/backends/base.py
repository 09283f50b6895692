"""The backend protocol: run one batch of preprocessed inputs.

A backend knows nothing about requests, batching or tasks: it takes a float32
``(N, 3, H, W)`` array and returns every output with the batch axis first.
``run`` may be called from several of the model's compute threads at once
(``care_serve.serving.compute``); onnxruntime sessions allow concurrent runs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A loaded model ready to run batches."""

    name: str
    output_names: list[str]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for a ``(N, 3, H, W)`` float32 batch, each with N rows."""
        ...

    def close(self) -> None:
        """Release the session/module (the backend is not used afterwards)."""
        ...
