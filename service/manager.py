"""The model manager: load, warm up, serve, reload and unload model versions.

One version of each model name serves at a time. ``load`` builds the backend,
the task and a warmed-up batcher in a worker thread while the current version
keeps serving, then swaps the new version in atomically (one assignment on the
event loop) and drains the old one: it waits until the requests that already
hold it have finished, then closes it. A failed load leaves the old version
serving. Requests find a model with ``lookup``, hold it with ``admit`` and give it back with
``release``, so draining knows when the old version is idle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.backends import Backend, load_backend
from service.batching import DynamicBatcher
from service.core_budget import CoreBudget
from service.errors import (
    CareServeError,
    InvalidInput,
    ModelNotReady,
    ModelStoreError,
    NotFound,
    ServerBusy,
)
from service.metrics import ServingMetrics
from service.redaction import redact_paths, redact_values
from service.settings import Settings, cpu_count
from service.store.manifest import TASKS, Manifest
from service.store.package import read_labels
from service.store.repository import ModelRepository, PackageInfo, check_name, check_version
from service.tasks.base import Task, get_task_class

__all__ = ["LoadedModel", "ModelManager"]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model version in memory: backend, task, batcher, and who is using it."""

    manifest: Manifest
    path: Path
    backend: Backend
    task: Task
    batcher: DynamicBatcher
    executor: ThreadPoolExecutor
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


class ModelManager:
    """Owns every loaded model; all methods run on the server's event loop."""

    def __init__(
        self, repository: ModelRepository, settings: Settings, metrics: ServingMetrics
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self._models: dict[str, LoadedModel] = {}
        self._loading: dict[str, int] = {}
        self._errors: dict[str, tuple[int | None, str]] = {}  # name -> (version, message)
        self._locks: dict[str, asyncio.Lock] = {}
        self._threads = settings.threads_per_model(1)
        # Caps the intra-op threads computing at once, across all models, to the cores.
        self.core_budget = CoreBudget(cpu_count())
        self._started = False
        # Models that should be serving: the start-up targets and what was loaded since,
        # minus what was unloaded. Strict readiness needs every one of them serving.
        self._wanted: set[str] = set()

    # -- start-up ------------------------------------------------------------------------
    def startup_targets(self) -> list[tuple[str, int | None]]:
        """(name, version) pairs to load at start-up, from ``settings.models``."""
        targets: dict[str, int | None] = {}
        for entry in self.settings.models:
            if entry == "*":
                for name in self.repository.model_names():
                    if self.repository.versions(name):
                        targets.setdefault(name, None)
                continue
            name, _, version = entry.partition(":")
            targets[check_name(name)] = check_version(version) if version else None
        return list(targets.items())

    async def start(self) -> list[str]:
        """Load the start-up models; return one human-readable line per model.

        A model named without a version whose newest version fails to load falls
        back to the newest one that loads (and the line says so); a model none of
        whose versions loads keeps the server not ready under strict readiness.
        """
        targets = self.startup_targets()
        self._threads = self.settings.threads_per_model(len(targets))
        self._wanted.update(name for name, _ in targets)
        lines = []
        if not targets:
            lines.append(f"no models to load: the model store {self.repository.root} is empty")
        for name, version in targets:
            lines.append(await self._start_one(name, version))
        self._started = True
        return lines

    async def _start_one(self, name: str, version: int | None) -> str:
        candidates: list[int | None] = [version]
        if version is None:
            candidates = [*sorted(self.repository.versions(name), reverse=True)] or [None]
        failures: list[str] = []
        newest_error = None
        for candidate in candidates:
            try:
                loaded = await self.load(name, candidate)
            except CareServeError as exc:
                failures.append(f"{name}/{candidate or '?'}: {exc.message}")
                newest_error = newest_error or self._errors.get(name)
                continue
            if newest_error is not None:  # serving an older version: keep why, for operators
                self._errors[name] = newest_error
            line = (
                f"loaded {name}/{loaded.version} ({loaded.manifest.task}, "
                f"{loaded.backend.name}) in {loaded.load_seconds:.2f} s"
            )
            if failures:
                line = f"FALLBACK {line}, because " + "; ".join(failures)
            return line
        return "FAILED " + "; ".join(failures)

    # -- lookup --------------------------------------------------------------------------
    def default_model(self, task: str) -> str:
        """The model that serves ``task`` when a request names none."""
        candidates = sorted(n for n, m in self._models.items() if m.manifest.task == task)
        try:
            preferred = self.repository.store_defaults().get(task)
        except ModelStoreError as exc:
            log.warning("%s", exc.message)
            preferred = None
        if preferred in candidates:
            return str(preferred)
        if candidates:
            return candidates[0]
        raise NotFound(
            f"no {task} model is loaded; name one with the 'model' parameter or load one "
            "(POST /models/{name}/load)"
        )

    def lookup(self, task: str, name: str | None, version: int | str | None) -> LoadedModel:
        """The serving version of ``name`` (or the task's default) for ``task``."""
        get_task_class(task)  # NotSupported when this build has no such task
        name = self.default_model(task) if not name else check_name(name)
        wanted = None if version in (None, "", 0) else check_version(version)
        loaded = self._models.get(name)
        if loaded is None:
            if name in self._loading:
                raise ModelNotReady(f"model {name!r} is loading; retry shortly")
            if self.repository.versions(name):
                raise NotFound(
                    f"model {name!r} is in the store but not loaded "
                    f"(load it with POST /models/{name}/load)"
                )
            known = ", ".join(sorted(self._models)) or "none"
            raise NotFound(f"model {name!r} not found (loaded models: {known})")
        if wanted is not None and wanted != loaded.version:
            raise NotFound(
                f"version {wanted} of model {name!r} is not loaded (serving version "
                f"{loaded.version}; load another with POST /models/{name}/load?version=N)"
            )
        if loaded.manifest.task != task:
            raise InvalidInput(
                f"model {name!r} is a {loaded.manifest.task} model; it cannot serve {task} "
                f"(use /{_ROUTE[loaded.manifest.task]})"
            )
        return loaded

    @staticmethod
    def admit(loaded: LoadedModel, images: int = 1) -> None:
        """Hold ``loaded`` for a request of ``images`` images, or ``ServerBusy`` when full.

        Counted from arrival (before the body is read or decoded): at most
        ``max_queue_size + max_batch_size`` images per model at once.
        """
        batching = loaded.manifest.batching
        limit = batching.max_queue_size + batching.max_batch_size
        if loaded.inflight + images > limit:
            raise ServerBusy(
                f"model {loaded.name!r} has {loaded.inflight} requests in flight (the limit is "
                f"max_queue_size {batching.max_queue_size} + max_batch_size "
                f"{batching.max_batch_size} = {limit}); retry later"
            )
        loaded.inflight += images

    @staticmethod
    def release(model: LoadedModel, images: int = 1) -> None:
        model.inflight -= images

    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._models)

    # -- lifecycle -----------------------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str, version: int | str | None = None) -> LoadedModel:
        """Load (or reload) ``name`` at ``version`` (default newest); swap; drain the old."""
        name = check_name(name)
        async with self._lock(name):
            try:
                package = self.repository.package(name, version)
            except ModelStoreError as exc:
                versions = self.repository.versions(name)
                wanted = check_version(version) if version else versions[-1] if versions else None
                raise self._load_failed(name, wanted, exc) from None
            self._loading[name] = package.manifest.version
            self.metrics.model_ready.labels(name, str(package.manifest.version)).set(0)
            try:
                new = await self._build(package)
            except CareServeError as exc:
                raise self._load_failed(name, package.manifest.version, exc) from None
            except Exception as exc:
                message = f"loading {name}/{package.manifest.version} failed: {exc!r}"
                log.exception("%s", message)
                error = ModelStoreError(message)
                raise self._load_failed(name, package.manifest.version, error) from exc
            finally:
                self._loading.pop(name, None)
            old = self._models.get(name)
            self._models[name] = new  # the atomic swap: new requests see only `new`
            self._wanted.add(name)
            self._errors.pop(name, None)
            self.metrics.model_ready.labels(name, str(new.version)).set(1)
            log.info(
                "serving %s/%s (%s, %s threads) after %.2f s",
                name,
                new.version,
                new.backend.name,
                new.threads,
                new.load_seconds,
            )
            if old is not None:
                await self._retire(old)
            return new

    def _load_failed(self, name: str, version: int | None, exc: CareServeError) -> CareServeError:
        """Record the load error of ``name`` (full in the log, redacted for clients)."""
        log.error("loading %s/%s failed: %s", name, version, exc.message)
        exc.message = redact_paths(exc.message, self.repository.root)
        self._errors[name] = (version, exc.message)
        return exc

    async def unload(self, name: str) -> LoadedModel:
        """Stop serving ``name``: refuse new requests, finish the accepted ones, free it."""
        name = check_name(name)
        async with self._lock(name):
            old = self._models.pop(name, None)
            if old is None:
                raise NotFound(f"model {name!r} is not loaded")
            self._wanted.discard(name)
            self._errors.pop(name, None)
            await self._retire(old)
            return old

    async def close(self) -> None:
        """Unload everything at once (server shutdown: the data plane has answered every
        request already, so nothing is waited for; a batch still running in a backend
        thread finishes there)."""
        for name in list(self._models):
            model = self._models.pop(name)
            await self._retire(model, drain_s=0.0)
        self._wanted.clear()

    async def _retire(self, model: LoadedModel, drain_s: float | None = None) -> None:
        """Stop ``model`` after its requests finish (at most ``drain_s``, default the
        ``drain_timeout_s`` setting), then free it."""
        drain = self.settings.drain_timeout_s if drain_s is None else drain_s
        model.state = "unloading"
        loop = asyncio.get_running_loop()
        end = loop.time() + drain
        while (model.inflight > 0 or not model.batcher.idle) and loop.time() < end:
            await asyncio.sleep(0.005)
        if model.inflight > 0 and drain > 0:
            log.warning(
                "%s/%s: %d requests still running after %.0f s; closing anyway",
                model.name,
                model.version,
                model.inflight,
                drain,
            )
        await model.batcher.close()
        model.executor.shutdown(wait=drain > 0)
        model.backend.close()
        model.state = "unloaded"
        labels = (model.name, str(model.version))
        if (
            self._models.get(model.name) is None
            or self._models[model.name].version != model.version
        ):
            self.metrics.model_ready.labels(*labels).set(0)
        self.metrics.queue_depth.labels(*labels).set(0)
        log.info("unloaded %s/%s", model.name, model.version)

    async def _build(self, package: PackageInfo) -> LoadedModel:
        manifest = package.manifest
        labels = read_labels(package.path, manifest)
        # Before the weights: a manifest the task refuses fails fast and leaks nothing.
        task = get_task_class(manifest.task)(manifest, labels, self.settings)
        threads = self._threads
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"compute-{manifest.name}")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            backend = await loop.run_in_executor(executor, self._load_backend, package, threads)
            await loop.run_in_executor(executor, self._warm_up, backend, manifest)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        seconds = time.perf_counter() - started
        labels_ = (manifest.name, str(manifest.version))

        def run(batch: np.ndarray) -> Any:
            with self.core_budget.hold(threads):
                return backend.run(batch)

        batcher = DynamicBatcher(
            run,
            manifest.batching,
            executor,
            name=f"{manifest.name}/{manifest.version}",
            on_batch=lambda n, s: self._on_batch(labels_, n),
            on_queue_depth=self.metrics.queue_depth.labels(*labels_).set,
        )
        batcher.start()
        self.metrics.load_duration.labels(*labels_).set(seconds)
        return LoadedModel(
            manifest, package.path, backend, task, batcher, executor, threads, seconds
        )

    def _on_batch(self, labels: tuple[str, str], size: int) -> None:
        self.metrics.batch_size.labels(*labels).observe(size)
        self.metrics.executions.labels(*labels).inc()

    def _load_backend(self, package: PackageInfo, threads: int) -> Backend:
        return load_backend(
            package.path,
            package.manifest,
            threads,
            self.settings.backend,
            allow_spinning=self.settings.onnx_allow_spinning,
        )

    def _warm_up(self, backend: Backend, manifest: Manifest) -> None:
        """Run batches of 1 and of ``max_batch_size`` so the first request is not slow."""
        if self.settings.warmup_runs == 0:
            return
        shape = (3, manifest.input.height, manifest.input.width)
        sizes = [1] * self.settings.warmup_runs + [manifest.batching.max_batch_size]
        for n in sizes:
            outputs = backend.run(np.zeros((n, *shape), dtype=np.float32))
            missing = [k for k in manifest.outputs if k not in outputs]
            wrong = {k: v.shape for k, v in outputs.items() if v.shape[:1] != (n,)}
            if missing or wrong:
                raise ModelStoreError(
                    f"{manifest.name}/{manifest.version}: warm-up produced wrong outputs "
                    f"(missing {missing}, wrong batch axis {wrong})"
                )

    # -- listing -------------------------------------------------------------------------
    def describe(self, name: str) -> dict[str, Any]:
        """State, versions and manifest summary of one model (loaded or only on disk)."""
        name = check_name(name)
        versions = self.repository.versions(name)
        loaded = self._models.get(name)
        if loaded is None and not versions and name not in self._loading:
            raise NotFound(f"model {name!r} is neither loaded nor in the model store")
        if loaded is not None:
            state, manifest = loaded.state, loaded.manifest
        else:
            state = (
                "loading"
                if name in self._loading
                else "failed"
                if name in self._errors
                else ("available")
            )
            try:
                manifest = self.repository.package(name).manifest
            except CareServeError:
                manifest = None
        error_version, error = self._errors.get(name, (None, None))
        info: dict[str, Any] = {
            "name": name,
            "state": state,
            "loaded_version": loaded.version if loaded else None,
            "versions": versions,
            "error": error,
            "error_version": error_version,
        }
        if manifest is not None:
            info.update(
                task=manifest.task,
                architecture=manifest.architecture,
                format=manifest.format,
                input=manifest.input.model_dump(),
                num_classes=manifest.num_classes,
                batching=manifest.batching.model_dump(),
                model_card=redact_values(manifest.model_card.model_dump(), self.repository.root),
            )
        if loaded is not None:
            info.update(
                backend=loaded.backend.name,
                threads=loaded.threads,
                load_seconds=round(loaded.load_seconds, 4),
                queue_depth=loaded.batcher.queue_depth,
            )
        return info

    def list_models(self) -> list[dict[str, Any]]:
        """Every model loaded or in the store, with its state and versions."""
        names = sorted(set(self.repository.model_names()) | set(self._models) | set(self._loading))
        return [self.describe(n) for n in names]

    def ready(self) -> bool:
        """Start-up loading finished and (strict readiness) every wanted model is serving.

        A reload never flips it: the old version serves until the new one is swapped in.
        """
        if not self._started:
            return False
        return not self.settings.strict_readiness or self._wanted.issubset(self._models)

    def not_serving(self) -> list[str]:
        """Models that should be serving but are not (why readiness is false)."""
        return sorted(self._wanted.difference(self._models))


_ROUTE = {
    task: {"classification": "classify", "detection": "detect"}.get(task, "segment")
    for task in TASKS
}
