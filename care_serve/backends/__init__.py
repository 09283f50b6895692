"""Backends: ONNX Runtime (default, no torch) and PyTorch (imported only when used)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from care_serve.backends.base import Backend
from care_serve.store.manifest import Manifest

__all__ = ["Backend", "load_backend"]


def load_backend(
    package_dir: Path,
    manifest: Manifest,
    threads: int,
    kind: str = "auto",
    *,
    spinning: str = "off",
    alone: Callable[[], bool] | None = None,
) -> Backend:
    """Load the package's weights with the backend its format needs (or ``kind``).

    ``spinning`` (onnxruntime only): ``off``, ``on`` or ``auto``, where ``alone``
    says whether a batch is the only request in the server
    (``care_serve.backends.adaptive_spinning``).
    """
    fmt = manifest.format if kind == "auto" else kind
    if fmt != manifest.format:
        from care_serve.errors import ModelStoreError

        raise ModelStoreError(
            f"{manifest.name}/{manifest.version} holds {manifest.format} weights; the server is "
            f"configured for backend={kind}"
        )
    if fmt == "pytorch":
        try:
            from care_serve.backends.torch_backend import TorchBackend
        except ImportError as exc:
            from care_serve.errors import ModelStoreError

            raise ModelStoreError(
                f"{manifest.name}/{manifest.version} holds PyTorch weights but torch is not "
                f"installed ({exc}); install care-serve[torch] or import the model as ONNX"
            ) from exc

        return TorchBackend(package_dir, manifest, threads)
    from care_serve.backends.onnx_backend import OnnxBackend

    if spinning == "auto":
        from care_serve.backends.adaptive_spinning import AdaptiveSpinningBackend

        return AdaptiveSpinningBackend(
            OnnxBackend(package_dir, manifest, threads, allow_spinning=True),
            OnnxBackend(package_dir, manifest, threads, allow_spinning=False),
            alone or (lambda: True),
            label=f"{manifest.name}/{manifest.version}",
        )
    return OnnxBackend(package_dir, manifest, threads, allow_spinning=spinning == "on")
