"""Build one model version: its task, backend, warm-up and batcher (``LoadedModel``).

The manager decides what loads and swaps it in; this module only builds a version
from its package and says what it built. Building first checks the package
(``care_serve.store.trust``: its signature and the sha256 of its files), then runs
the backend's load and warm-up, all in the version's own compute thread, so
everything else keeps serving. A package without digests loads unverified, with
one warning per package directory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from care_serve.backends import Backend, load_backend
from care_serve.errors import ModelStoreError
from care_serve.observability.metrics import ServingMetrics
from care_serve.observability.thread_names import name_this_thread
from care_serve.serving.batching import DynamicBatcher
from care_serve.serving.compute import ModelCompute, narrow_threads
from care_serve.serving.core_budget import CoreBudget
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.store.package import read_labels
from care_serve.store.repository import PackageInfo
from care_serve.store.trust import TrustPolicy, TrustReport, verify_package
from care_serve.tasks.base import Task, get_task_class

__all__ = ["LoadedModel", "build_version", "warm_up"]

log = logging.getLogger(__name__)

_warned_unverified: set[Path] = set()  # package directories already warned about


@dataclass
class LoadedModel:
    """A model version in memory: backend, task, batcher, and who is using it."""

    manifest: Manifest
    path: Path
    backend: ModelCompute
    task: Task
    batcher: DynamicBatcher
    executors: list[ThreadPoolExecutor]  # one thread per batch slot; the first also loads
    threads: int
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    inflight: int = 0
    state: str = "ready"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The first compute thread: it loads the version and runs lone batches."""
        return self.executors[0]


async def build_version(
    package: PackageInfo,
    settings: Settings,
    threads: int,
    core_budget: CoreBudget,
    metrics: ServingMetrics,
    *,
    alone: Callable[[int], bool],
    trust: TrustPolicy,
) -> LoadedModel:
    """The task, the warmed-up backend and the started batcher of ``package``.

    The package is checked first under ``trust`` (signature, files' sha256) in the
    version's compute thread, then the task is built: a manifest the task refuses
    fails before the weights load. ``alone(n)`` says whether a batch of ``n`` images
    is all the server holds (``care_serve.serving.compute``, and the ONNX backend's
    ``onnx_allow_spinning=auto``).
    """
    manifest = package.manifest
    where = f"{manifest.name}/{manifest.version}"
    slots = settings.batch_slots(threads, manifest.format)
    executors = [
        ThreadPoolExecutor(
            1,
            thread_name_prefix=f"compute-{manifest.name}-{slot}",
            initializer=name_this_thread,
            initargs=("care-compute",),
        )
        for slot in range(slots)
    ]
    executor = executors[0]
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        report = await loop.run_in_executor(
            executor, verify_package, package.path, manifest, trust, where
        )
        _log_trust(package.path, where, report)
        task_class = get_task_class(manifest.task)
        labels = read_labels(package.path, manifest) if task_class.has_labels else []
        task = task_class(manifest, labels, settings)
    except BaseException:
        for each in executors:
            each.shutdown(wait=False)
        raise

    def load() -> ModelCompute:
        wide = load_backend(
            package.path,
            manifest,
            threads,
            settings.backend,
            spinning=settings.onnx_allow_spinning,
            alone=lambda: alone(1),
        )
        if slots == 1:
            return ModelCompute(wide, threads, core_budget)
        try:
            narrow = load_backend(
                package.path, manifest, narrow_threads(threads, slots), settings.backend
            )
        except BaseException:
            wide.close()
            raise
        return ModelCompute(wide, threads, core_budget, narrow=narrow, slots=slots, alone=alone)

    try:
        backend = await loop.run_in_executor(executor, load)
        for part in backend.parts():
            await loop.run_in_executor(executor, warm_up, part, manifest, settings.warmup_runs)
    except BaseException:
        for each in executors:
            each.shutdown(wait=False)
        raise
    seconds = time.perf_counter() - started
    labels_ = (manifest.name, str(manifest.version))

    def on_batch(size: int, _seconds: float) -> None:
        metrics.batch_size.labels(*labels_).observe(size)
        metrics.executions.labels(*labels_).inc()

    batcher = DynamicBatcher(
        backend.run,
        manifest.batching,
        executors,
        slots=slots,
        name=f"{manifest.name}/{manifest.version}",
        on_batch=on_batch,
        on_queue_depth=metrics.queue_depth.labels(*labels_).set,
    )
    batcher.start()
    metrics.load_duration.labels(*labels_).set(seconds)
    return LoadedModel(manifest, package.path, backend, task, batcher, executors, threads, seconds)


def _log_trust(path: Path, where: str, report: TrustReport) -> None:
    """Say what the check found; an unverified package is a warning, once per directory."""
    if report.files_verified:
        signed = f", signature by key {report.signed_by}" if report.signed_by else ""
        log.info("%s: files match their sha256%s", where, signed)
        return
    if path in _warned_unverified:
        return
    _warned_unverified.add(path)
    log.warning(
        "%s is unverified: its manifest.json lists no sha256 of its files (written before "
        "care-serve recorded them), so a changed or corrupted weights file would load. Record "
        "them with `care-serve sign %s --add-digests` (or write the package again with "
        "care-serve import / pull / train)",
        where,
        path,
    )


def warm_up(backend: Backend, manifest: Manifest, runs: int) -> None:
    """Run ``runs`` batches of 1 and one of ``max_batch_size`` so the first request is not
    slow; ``ModelStoreError`` when the outputs are not what the manifest names."""
    if runs == 0:
        return
    shape = (3, manifest.input.height, manifest.input.width)
    for n in [1] * runs + [manifest.batching.max_batch_size]:
        outputs = backend.run(np.zeros((n, *shape), dtype=np.float32))
        missing = [k for k in manifest.outputs if k not in outputs]
        wrong = {k: v.shape for k, v in outputs.items() if v.shape[:1] != (n,)}
        if missing or wrong:
            raise ModelStoreError(
                f"{manifest.name}/{manifest.version}: warm-up produced wrong outputs "
                f"(missing {missing}, wrong batch axis {wrong})"
            )
