"""Answering image files through a model package exactly as the server does.

The package is loaded with the server's own pieces: ``read_manifest`` /
``read_labels``, ``load_backend`` (ONNX Runtime for ONNX packages) and the
task plugin from ``get_task_class``; each file's bytes go through
``probe_image`` and ``task.decode`` (EXIF orientation, RGB conversion, reduced
scale as the server's ``reduced_decode`` sets it), ``task.preprocess``, the
backend and ``task.postprocess``. Metrics computed on these answers are
therefore the answers a client of the service gets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from care_serve.errors import DatasetError
from care_serve.imaging.decode import probe_image
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.store.package import read_labels, read_manifest

__all__ = ["PackageRunner"]

MAX_BYTES = 256 * 1024 * 1024
MAX_PIXELS = 200_000_000


class PackageRunner:
    """A package loaded for offline inference (one process, no server)."""

    def __init__(
        self,
        package_dir: str | os.PathLike[str],
        threads: int = 1,
        backend: str = "auto",
        *,
        reduced_decode: bool | None = None,
    ) -> None:
        """``reduced_decode``: the server's setting (None: its default)."""
        from care_serve.backends import load_backend
        from care_serve.tasks import get_task_class

        self.package_dir = Path(package_dir)
        self.manifest: Manifest = read_manifest(self.package_dir)
        self.labels: list[str] = read_labels(self.package_dir, self.manifest)
        self.backend = load_backend(self.package_dir, self.manifest, threads, backend)
        settings = Settings(model_store=self.package_dir.parent.parent, models=[])
        if reduced_decode is not None:
            settings = settings.model_copy(update={"reduced_decode": reduced_decode})
        self.task = get_task_class(self.manifest.task)(self.manifest, self.labels, settings)

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        params: Mapping[str, Any] | None = None,
        batch_size: int = 8,
    ) -> Iterator[Any]:
        """The task's result for each file, in order (batches of equal input shapes)."""
        parsed = self.task.parse_params(dict(params or {}))
        pending: list[tuple[np.ndarray, Any]] = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise DatasetError(f"cannot read image {path}: {exc}") from None
            image = self.task.decode(probe_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS))
            array, meta = self.task.preprocess(image)
            if pending and (len(pending) == batch_size or pending[0][0].shape != array.shape):
                yield from self._run(pending, parsed)
                pending = []
            pending.append((array, meta))
        if pending:
            yield from self._run(pending, parsed)

    def _run(self, pending: list[tuple[np.ndarray, Any]], params: Any) -> Iterator[Any]:
        batch = np.stack([array for array, _ in pending]).astype(np.float32, copy=False)
        outputs = self.backend.run(batch)
        for i, (_, meta) in enumerate(pending):
            yield self.task.postprocess({k: v[i] for k, v in outputs.items()}, meta, params)

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()
