"""The ONNX Runtime backend (the default; needs no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from care_serve.errors import ModelStoreError
from care_serve.store.manifest import Manifest

__all__ = ["OnnxBackend", "make_session"]


def make_session(path: Path, threads: int, allow_spinning: bool = False) -> Any:
    """An ``InferenceSession`` with the tuned options of ``care_serve.backends.onnx_session``.

    Without ``allow_spinning``, idle intra-op threads sleep instead of busy-waiting, which
    leaves the cores to image decoding (see ``docs/performance.md``). The server's setting
    ``onnx_allow_spinning`` is ``auto`` by default: a second session of each model, made
    with ``allow_spinning``, serves requests alone in the server while it measures faster
    (``care_serve.backends.adaptive_spinning``).
    """
    from care_serve.backends.onnx_session import create_onnx_session

    return create_onnx_session(path, threads, spinning=allow_spinning)


class OnnxBackend:
    """Runs an ONNX file with onnxruntime on the CPU."""

    def __init__(
        self, package_dir: Path, manifest: Manifest, threads: int, allow_spinning: bool = False
    ) -> None:
        path = package_dir / manifest.weights
        try:
            self._session = make_session(path, threads, allow_spinning)
        except Exception as exc:
            raise ModelStoreError(f"{path}: onnxruntime cannot load the model ({exc})") from exc
        self.name = f"onnxruntime ({threads} thread{'' if threads == 1 else 's'})"
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelStoreError(f"{path}: expected one input, the model has {len(inputs)}")
        self._input_name = inputs[0].name
        shape = list(inputs[0].shape)
        expected = [None, 3, manifest.input.height, manifest.input.width]
        for axis, (got, want) in enumerate(zip(shape[1:], expected[1:], strict=False), start=1):
            if isinstance(got, int) and got != want:
                raise ModelStoreError(
                    f"{path}: input axis {axis} is {got} but the manifest implies {want} "
                    f"(input {manifest.input.height}x{manifest.input.width})"
                )
        available = [o.name for o in self._session.get_outputs()]
        missing = [name for name in manifest.outputs if name not in available]
        if missing:
            raise ModelStoreError(
                f"{path}: outputs {missing} named in the manifest are not in the model "
                f"(model outputs: {available})"
            )
        self.output_names = list(manifest.outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self._session.run(self.output_names, {self._input_name: batch})
        return dict(zip(self.output_names, results, strict=True))

    def close(self) -> None:
        self._session = None
