"""The model manager: load, warm up, serve, reload and unload model versions.

Several versions of a model can serve at once: which ones is the model's version
policy (``store.json``, ``care_serve.store.config``; by default the newest version
only). ``load`` builds a version's backend, task and warmed-up batcher in a worker
thread (``care_serve.serving.loader``) while everything else keeps serving, then
swaps it in atomically (one
assignment on the event loop); reloading a serving version drains the old copy:
it waits until the requests that already hold it have finished, then closes it.
A failed load leaves what was serving serving, and its error is kept per version.
Requests find a version with ``lookup``, hold it with ``admit`` and give it back
with ``release``, so draining knows when a version is idle.

Defaults never depend on what happens to be loaded. The default model of a task is
the one ``store.json`` names; without one, the first model of that task that was
loaded (start-up loads in the order of the ``models`` setting, ``*`` alphabetically),
kept until it is unloaded. The default version of a model is its ``default_version``
in ``store.json``, else the highest version serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from care_serve.errors import (
    CareServeError,
    ConfigurationError,
    InvalidInput,
    ModelNotReady,
    ModelStoreError,
    NotFound,
    Remedy,
    ServerBusy,
)
from care_serve.observability.metrics import ServingMetrics
from care_serve.observability.redaction import redact_paths, redact_values
from care_serve.serving.core_budget import CoreBudget
from care_serve.serving.loader import LoadedModel, build_version
from care_serve.serving.status import ModelStatus, State, TaskDefault, VersionStatus
from care_serve.settings import Settings, cpu_count
from care_serve.store.config import STORE_FILE, StoreConfig, VersionPolicy
from care_serve.store.repository import ModelRepository, PackageInfo, check_name, check_version
from care_serve.store.trust import TrustPolicy
from care_serve.tasks.base import get_task_class, task_names

__all__ = ["ModelManager", "ModelRecord"]

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass
class ModelRecord:
    """Everything the manager knows about one model name."""

    serving: dict[int, LoadedModel] = field(default_factory=dict)  # version -> serving copy
    loading: set[int] = field(default_factory=set)  # versions being built
    # version -> message of its last failed load; dict order = recency.
    errors: dict[int | None, str] = field(default_factory=dict)
    fingerprints: dict[int, Fingerprint] = field(default_factory=dict)  # of what serves
    failed: dict[int, Fingerprint] = field(default_factory=dict)  # files that failed to load
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one load/unload at a time
    # Should be serving: a start-up target or loaded since, and not unloaded since.
    # Strict readiness needs every wanted model serving.
    wanted: bool = False


class ModelManager:
    """Owns every loaded model version; all methods run on the server's event loop."""

    def __init__(
        self, repository: ModelRepository, settings: Settings, metrics: ServingMetrics
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self._records: dict[str, ModelRecord] = {}  # one per model name ever named
        self._threads = settings.threads_per_model(1)
        self._images_in_flight = 0  # admitted and not yet released, every model
        # Caps the intra-op threads computing at once, across all models, to the cores.
        self.core_budget = CoreBudget(cpu_count())
        self._started = False
        self._first_loaded: dict[str, str] = {}  # task -> its default without store.json
        self.config = StoreConfig()
        self.config_error: str | None = None
        # Why the server is not ready although nothing it should serve is missing: the store
        # held no model at start (allow_empty_store); cleared once a model serves.
        self.empty_store: str | None = None
        # Called (on the event loop) whenever what serves may have changed readiness.
        self.on_change: list[Callable[[], None]] = []
        # Read once, at start: a bad key file stops the start with a clear ValueError.
        self.trust = TrustPolicy.from_key_file(
            settings.package_public_key, settings.require_signed_packages
        )

    # -- records -------------------------------------------------------------------------
    def _record(self, name: str) -> ModelRecord:
        """The record of ``name``, made on first use."""
        return self._records.setdefault(name, ModelRecord())

    def _peek(self, name: str) -> ModelRecord:
        """The record of ``name`` to read (an empty one, not kept, for a name never named)."""
        return self._records.get(name) or ModelRecord()

    def _serving_names(self) -> list[str]:
        """Models with at least one serving version."""
        return [name for name, record in self._records.items() if record.serving]

    # -- the store's configuration ---------------------------------------------------------
    def refresh_config(self) -> StoreConfig:
        """Re-read ``store.json``; an invalid file keeps the last good one and is reported."""
        try:
            self.config = self.repository.config()
        except ModelStoreError as exc:
            if exc.message != self.config_error:
                log.error("%s; keeping the previous store configuration", exc.message)
            self.config_error = exc.message
        else:
            self.config_error = None
        return self.config

    def policy(self, name: str) -> VersionPolicy:
        """The version policy of ``name`` (``store.json``, default the newest version)."""
        return self.config.model(name).version_policy

    # -- start-up ------------------------------------------------------------------------
    def _held(self) -> list[str]:
        """The models of the store that have at least one version."""
        return [n for n in self.repository.model_names() if self.repository.versions(n)]

    def _no_model(self, held: list[str]) -> str | None:
        """Why the store holds no model (None when ``held``, its models, is not empty)."""
        root = self.repository.root
        if not self.repository.exists():
            return f"the model store {root} does not exist"
        return None if held else f"the model store {root} holds no model"

    def check_store(self) -> None:
        """Refuse the start (one line) when the store holds no model (unless
        ``allow_empty_store``) or the ``models`` setting names what the store lacks."""
        held = self._held()
        empty = self._no_model(held)
        if empty is not None and not self.settings.allow_empty_store:
            raise ConfigurationError(
                f"{empty}: check the path (--model-store, CARE_SERVE_MODEL_STORE), add a model "
                "with 'care-serve import' or 'care-serve pull', or start anyway with "
                "--allow-empty-store (not ready until a model serves)"
            )
        for entry in self.settings.models:
            if entry == "*":
                continue
            name, _, version = entry.partition(":")
            try:
                name = check_name(name)
                pinned = check_version(version) if version else None
            except InvalidInput as exc:
                raise ConfigurationError(f"--models {entry!r}: {exc.message}") from None
            versions = self.repository.versions(name)
            if not versions:
                raise ConfigurationError(
                    f"--models names {name!r}, which is not in the model store "
                    f"{self.repository.root} (models: {', '.join(held) or 'none'}): check the "
                    "name, or add the model with 'care-serve import' or 'care-serve pull'"
                )
            if pinned is not None and pinned not in versions:
                raise ConfigurationError(
                    f"--models names version {pinned} of {name!r}, which is not in the model "
                    f"store {self.repository.root} (versions: {', '.join(map(str, versions))})"
                )

    def _changed(self) -> None:
        for listener in self.on_change:
            listener()

    def startup_targets(self) -> list[tuple[str, int | None]]:
        """(name, version) pairs the ``models`` setting covers in the store now: what
        start-up loads and what the watched store follows."""
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
        """Load the start-up models; return one human-readable line per version.

        A model named without a version loads the versions its policy selects; when
        none of them loads, it falls back to the newest version that does (and the
        line says so). A model none of whose versions loads keeps the server not
        ready under strict readiness.
        """
        self.refresh_config()
        lines = [f"FAILED {self.config_error}"] if self.config_error else []
        targets = self.startup_targets()
        self._threads = self.settings.threads_per_model(len(targets))
        for name, _ in targets:
            self._record(name).wanted = True
        self.empty_store = self._no_model(self._held())
        if self.empty_store is not None:
            lines.append(
                f"WARNING {self.empty_store} (allow_empty_store): the store is empty, nothing "
                "is loaded and the server is not ready until a model is added and loaded"
            )
        elif not targets:
            lines.append("no models to load at start-up (the models setting names none)")
        for name, version in targets:
            lines.extend(await self._start_one(name, version))
        for task, name in sorted(self.config.defaults.items()):
            if not self._peek(name).serving:
                lines.append(
                    f"WARNING the default {task} model {name!r} ({STORE_FILE}) is not loaded"
                )
        self._started = True
        self._changed()
        return lines

    async def _start_one(self, name: str, version: int | None) -> list[str]:
        disk = self.repository.versions(name)
        chosen = [version] if version is not None else self.policy(name).select(disk)
        lines: list[str] = []
        failures: list[str] = []
        for candidate in chosen:
            try:
                lines.append(self._loaded_line(await self._load_version(name, candidate)))
            except CareServeError as exc:
                failures.append(f"{name}/{candidate}: {exc.message}")
        if lines:
            return lines + [f"FAILED {failure}" for failure in failures]
        if version is None:  # nothing the policy selects loads: the newest older one that does
            for candidate in sorted(set(disk) - set(chosen), reverse=True):
                try:
                    loaded = await self._load_version(name, candidate)
                except CareServeError as exc:
                    failures.append(f"{name}/{candidate}: {exc.message}")
                    continue
                return [f"FALLBACK {self._loaded_line(loaded)}, because " + "; ".join(failures)]
        if not failures:
            failures.append(f"{name}: its version policy selects none of its versions {disk}")
        return ["FAILED " + "; ".join(failures)]

    @staticmethod
    def _loaded_line(loaded: LoadedModel) -> str:
        return (
            f"loaded {loaded.name}/{loaded.version} ({loaded.manifest.task}, "
            f"{loaded.backend.name}) in {loaded.load_seconds:.2f} s"
        )

    # -- lookup --------------------------------------------------------------------------
    def representative(self, name: str) -> LoadedModel | None:
        """The serving version of ``name`` that stands for it: the default version, else
        the highest serving (None when none serves)."""
        versions = self._peek(name).serving
        if not versions:
            return None
        chosen = self.default_version(name)
        return versions[chosen if chosen is not None else max(versions)]

    def serving_task(self, name: str) -> str | None:
        """The task ``name`` serves (None when no version serves)."""
        loaded = self.representative(name)
        return loaded.manifest.task if loaded is not None else None

    def default_model(self, task: str) -> str:
        """The model that serves ``task`` when a request names none (see the module doc)."""
        explicit = self.config.defaults.get(task)
        if explicit is not None:
            if self.serving_task(explicit) == task:
                return explicit
            if self._peek(explicit).loading:
                raise ModelNotReady(
                    f"the default {task} model {explicit!r} is loading; retry shortly"
                )
            raise NotFound(
                f"the default {task} model {explicit!r} (set in {STORE_FILE}) is not loaded; "
                "name a model with the 'model' parameter or load this one",
                remedy=Remedy("load", explicit),
            )
        first = self._first_loaded.get(task)
        if first is not None and self.serving_task(first) == task:
            return first
        raise NotFound(
            f"no {task} model is loaded; name one with the 'model' parameter or load one",
            remedy=Remedy("load"),
        )

    def default_version(self, name: str) -> int | None:
        """The version answering requests to ``name`` that name none (None: none serves)."""
        versions = self._peek(name).serving
        if not versions:
            return None
        configured = self.config.model(name).default_version
        if configured is not None:
            return configured if configured in versions else None
        return max(versions)

    def lookup(self, task: str, name: str | None, version: int | str | None) -> LoadedModel:
        """The serving version of ``name`` (or the task's default) for ``task``."""
        get_task_class(task)  # NotSupported when this build has no such task
        name = self.default_model(task) if not name else check_name(name)
        wanted = None if version in (None, "", 0) else check_version(version)
        versions = self._peek(name).serving
        if not versions:
            if self._peek(name).loading:
                raise ModelNotReady(f"model {name!r} is loading; retry shortly")
            if self.repository.versions(name):
                raise NotFound(
                    f"model {name!r} is in the store but not loaded", remedy=Remedy("load", name)
                )
            known = ", ".join(sorted(self._serving_names())) or "none"
            raise NotFound(f"model {name!r} not found (loaded models: {known})")
        serving = ", ".join(map(str, sorted(versions)))
        if wanted is None:
            chosen = self.default_version(name)
            if chosen is None:
                configured = self.config.model(name).default_version
                raise NotFound(
                    f"the default version {configured} of model {name!r} (set in {STORE_FILE}) "
                    f"is not serving (serving versions: {serving}); name a version"
                )
            wanted = chosen
        loaded = versions.get(wanted)
        if loaded is None:
            if wanted in self._peek(name).loading:
                raise ModelNotReady(f"version {wanted} of model {name!r} is loading; retry shortly")
            raise NotFound(
                f"version {wanted} of model {name!r} is not loaded (serving versions: {serving})",
                remedy=Remedy("load", name, any_version=True),
            )
        if loaded.manifest.task != task:
            raise InvalidInput(
                f"model {name!r} is a {loaded.manifest.task} model; it cannot serve {task}",
                remedy=Remedy("use_task", task=loaded.manifest.task),
            )
        return loaded

    def admit(self, loaded: LoadedModel, images: int = 1, *, background: bool = False) -> None:
        """Hold ``loaded`` for a request of ``images`` images, or ``ServerBusy`` when full.

        Counted from arrival (before the body is read or decoded): at most
        ``max_queue_size + max_batch_size`` images per model version at once.
        Background work (stream frames) may hold at most half of that, so requests
        always find room.
        """
        batching = loaded.manifest.batching
        limit = batching.max_queue_size + batching.max_batch_size
        if background and loaded.inflight + images > limit // 2:
            raise ServerBusy(
                f"model {loaded.name!r} has {loaded.inflight} images in flight; stream frames "
                f"may hold at most half of its {limit} places"
            )
        if loaded.inflight + images > limit:
            raise ServerBusy(
                f"model {loaded.name!r} has {loaded.inflight} requests in flight (the limit is "
                f"max_queue_size {batching.max_queue_size} + max_batch_size "
                f"{batching.max_batch_size} = {limit}); retry later"
            )
        loaded.inflight += images
        self._images_in_flight += images

    def release(self, model: LoadedModel, images: int = 1) -> None:
        """Give back what ``admit`` held."""
        model.inflight -= images
        self._images_in_flight -= images

    def _alone(self, images: int = 1) -> bool:
        """At most ``images`` images are in the server (over every model): the batch about
        to run."""
        return self._images_in_flight <= images

    def loaded(self) -> dict[str, LoadedModel]:
        """Every serving model by name, at its default version (or its highest one)."""
        return {
            name: m
            for name in self._serving_names()
            if (m := self.representative(name)) is not None
        }

    def loaded_versions(self) -> dict[str, dict[int, LoadedModel]]:
        """Every serving version, by name then version."""
        return {name: dict(r.serving) for name, r in self._records.items() if r.serving}

    # -- lifecycle -----------------------------------------------------------------------
    def _lock(self, name: str) -> asyncio.Lock:
        return self._record(name).lock

    async def load(self, name: str, version: int | str | None = None) -> None:
        """Load (or reload) version ``version`` of ``name`` beside the others; without a
        version, (re)load what the model's version policy selects and retire the rest."""
        name = check_name(name)
        self.refresh_config()
        if not self.repository.versions(name):
            held = [n for n in self.repository.model_names() if self.repository.versions(n)]
            raise NotFound(
                f"model {name!r} is not in the model store (models in the store: "
                f"{', '.join(sorted(held)) or 'none'})"
            )
        if version not in (None, "", 0):
            await self._load_version(name, check_version(version))
            return
        await self.apply_policy(name, reload=True)

    async def apply_policy(
        self, name: str, *, reload: bool, policy: VersionPolicy | None = None
    ) -> list[str]:
        """Make what serves of ``name`` match its version policy and the store.

        Loads the selected versions not serving (``reload``: and reloads the serving
        ones; otherwise reloads only a version whose files changed, and retries a failed
        one only once its files change). Versions gone from the store are retired; the
        others outside the policy only once every selected version serves, so a new
        version that fails leaves the old one serving. Raises the first load error after
        doing the rest; returns a line per change. ``policy`` overrides the model's.
        """
        policy = policy or self.policy(name)
        disk = self.repository.versions(name)
        selected = policy.select(disk)
        if not selected and reload:
            raise NotFound(
                f"the version policy of {name!r} ({policy.describe()}) selects none "
                f"of its versions in the store ({disk or 'none'})"
            )
        changes: list[str] = []
        first_error: CareServeError | None = None
        for v in selected:
            record = self._peek(name)
            current = self.repository.fingerprint(name, v)
            serving = v in record.serving
            if not reload:
                if serving and record.fingerprints.get(v) == current:
                    continue
                if not serving and record.failed.get(v) == current:
                    continue
            try:
                loaded = await self._load_version(name, v)
            except CareServeError as exc:
                first_error = first_error or exc
                changes.append(f"FAILED {name}/{v}: {exc.message}")
                continue
            changes.append(("reloaded " if serving else "") + self._loaded_line(loaded))
        serving_now = self._peek(name).serving
        retire = [v for v in serving_now if v not in disk]
        if all(v in serving_now for v in selected):
            retire += [v for v in serving_now if v in disk and v not in selected]
        for v in sorted(retire):
            await self.unload(name, v)
            changes.append(f"unloaded {name}/{v}")
        if first_error is not None and reload:
            raise first_error
        return changes

    async def _load_version(self, name: str, version: int) -> LoadedModel:
        """Build version ``version`` of ``name``, swap it in, drain the copy it replaces."""
        record = self._record(name)
        async with record.lock:
            fingerprint = self.repository.fingerprint(name, version)
            try:
                package = self.repository.package(name, version)
            except ModelStoreError as exc:
                raise self._load_failed(name, version, exc, fingerprint) from None
            record.loading.add(version)
            labels = (name, str(version))
            if version not in record.serving:
                self.metrics.model_ready.labels(*labels).set(0)
            try:
                new = await self._build(package)
            except CareServeError as exc:
                raise self._load_failed(name, version, exc, fingerprint) from None
            except Exception as exc:
                message = f"loading {name}/{version} failed: {exc!r}"
                log.exception("%s", message)
                error = ModelStoreError(message)
                raise self._load_failed(name, version, error, fingerprint) from exc
            finally:
                record.loading.discard(version)
            old = record.serving.get(version)
            record.serving[version] = new  # the atomic swap: new requests see only `new`
            record.wanted = True
            self._first_loaded.setdefault(new.manifest.task, name)
            record.errors.pop(version, None)
            record.fingerprints[version] = fingerprint
            record.failed.pop(version, None)
            self.metrics.model_ready.labels(*labels).set(1)
            self.metrics.load_error.labels(*labels).set(0)
            self.empty_store = None  # a model serves: the store's emptiness no longer matters
            self._changed()
            log.info(
                "serving %s/%s (%s) after %.2f s",
                name,
                version,
                new.backend.name,
                new.load_seconds,
            )
            if old is not None:
                await self._retire(old)
            return new

    def _load_failed(
        self, name: str, version: int, exc: CareServeError, fingerprint: Fingerprint
    ) -> CareServeError:
        """Record the load error of ``name/version`` (full in the log, redacted for clients)."""
        log.error("loading %s/%s failed: %s", name, version, exc.message)
        exc.message = redact_paths(exc.message, self.repository.root)
        record = self._record(name)
        record.errors.pop(version, None)  # re-inserted last: the newest error
        record.errors[version] = exc.message
        record.failed[version] = fingerprint
        labels = (name, str(version))
        self.metrics.load_failures.labels(*labels).inc()
        self.metrics.load_error.labels(*labels).set(1)
        return exc

    async def unload(self, name: str, version: int | str | None = None) -> None:
        """Stop serving ``name`` (every version, or only ``version``): refuse new requests,
        finish the accepted ones, free them."""
        name = check_name(name)
        wanted = None if version in (None, "", 0) else check_version(version)
        record = self._record(name)
        async with record.lock:
            versions = record.serving
            if not versions:
                raise NotFound(f"model {name!r} is not loaded")
            if wanted is not None and wanted not in versions:
                serving = ", ".join(map(str, sorted(versions)))
                raise NotFound(
                    f"version {wanted} of model {name!r} is not loaded "
                    f"(serving versions: {serving})"
                )
            retired = [versions.pop(v) for v in ([wanted] if wanted else sorted(versions))]
            if not versions:
                record.wanted = False
                self._forget_default(name)
            self._changed()
            if wanted is None:
                record.errors.clear()
            for old in retired:
                record.fingerprints.pop(old.version, None)
                await self._retire(old)

    def _forget_default(self, name: str) -> None:
        """``name`` stopped serving: its tasks' defaults go to the alphabetically first other."""
        for task, first in list(self._first_loaded.items()):
            if first != name:
                continue
            others = sorted(n for n in self._serving_names() if self.serving_task(n) == task)
            if others:
                self._first_loaded[task] = others[0]
            else:
                del self._first_loaded[task]

    def forget_errors(self, name: str, keep: set[int]) -> None:
        """Drop the load errors of versions of ``name`` no longer in the store."""
        errors = self._peek(name).errors
        for version in [v for v in errors if v not in keep]:
            del errors[version]

    async def close(self) -> None:
        """Unload everything at once (server shutdown: the data plane has answered every
        request already, so nothing is waited for; a batch still running in a backend
        thread finishes there)."""
        for record in self._records.values():
            retired = list(record.serving.values())
            record.serving.clear()
            record.wanted = False
            for model in retired:
                await self._retire(model, drain_s=0.0)

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
                "%s/%s: %d %s still running after %.0f s; closing anyway",
                model.name,
                model.version,
                model.inflight,
                "request" if model.inflight == 1 else "requests",
                drain,
            )
        await model.batcher.close()
        for executor in model.executors:
            executor.shutdown(wait=drain > 0)
        model.backend.close()
        model.state = "unloaded"
        labels = (model.name, str(model.version))
        if self._peek(model.name).serving.get(model.version) is None:
            self.metrics.model_ready.labels(*labels).set(0)
        self.metrics.queue_depth.labels(*labels).set(0)
        log.info("unloaded %s/%s", model.name, model.version)

    async def _build(self, package: PackageInfo) -> LoadedModel:
        return await build_version(
            package,
            self.settings,
            self._threads,
            self.core_budget,
            self.metrics,
            alone=self._alone,
            trust=self.trust,
        )

    # -- listing -------------------------------------------------------------------------
    def _version_states(self, name: str, disk: list[int]) -> list[VersionStatus]:
        record = self._peek(name)
        serving, loading, errors = record.serving, record.loading, record.errors
        default = self.default_version(name)
        selected = set(self.policy(name).select(disk))
        states = []
        for v in sorted(set(disk) | set(serving) | loading):
            state: State = (
                "ready"
                if v in serving
                else "loading"
                if v in loading
                else "failed"
                if v in errors
                else "available"
            )
            states.append(
                VersionStatus(
                    version=v,
                    state=state,
                    default=v == default,
                    in_policy=v in selected,
                    error=errors.get(v),
                )
            )
        return states

    def describe(self, name: str) -> ModelStatus:
        """State, versions, defaults and manifest summary of one model (loaded or on disk)."""
        name = check_name(name)
        disk = self.repository.versions(name)
        record = self._peek(name)
        serving = record.serving
        if not serving and not disk and not record.loading:
            raise NotFound(f"model {name!r} is neither loaded nor in the model store")
        default = self.default_version(name)
        loaded = self.representative(name)
        errors = record.errors
        state: State
        if loaded is not None:
            state, manifest = "ready", loaded.manifest
        else:
            state = "loading" if record.loading else "failed" if errors else "available"
            try:
                manifest = self.repository.package(name).manifest
            except CareServeError:
                manifest = None
        error_version, error = next(reversed(errors.items()), (None, None))
        config = self.config.model(name)
        info: dict[str, Any] = {}
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
                queue_depth=sum(m.batcher.queue_depth for m in serving.values()),
                parameters=loaded.task.served_parameters(),
            )
        return ModelStatus(
            name=name,
            state=state,
            loaded_version=default,
            loaded_versions=sorted(serving),
            versions=disk,
            version_policy=config.version_policy.describe(),
            default_version=default,
            default_version_source=(
                STORE_FILE if config.default_version is not None else "highest serving version"
            ),
            default_for=self.default_for(name),
            version_status=self._version_states(name, disk),
            error=error,
            error_version=error_version,
            **info,
        )

    def default_for(self, name: str) -> list[str]:
        """The tasks whose requests naming no model go to ``name``."""
        tasks = []
        for task in task_names():
            try:
                if self.default_model(task) == name:
                    tasks.append(task)
            except CareServeError:
                continue
        return tasks

    def defaults(self) -> dict[str, TaskDefault]:
        """Per task: the default model, where the choice comes from, and whether it serves."""
        result: dict[str, TaskDefault] = {}
        for task in task_names():
            explicit = self.config.defaults.get(task)
            name = explicit or self._first_loaded.get(task)
            if name is None:
                continue
            result[task] = TaskDefault(
                model=name,
                source=STORE_FILE if explicit else "first loaded",
                serving=self.serving_task(name) == task,
            )
        return result

    def list_models(self) -> list[ModelStatus]:
        """Every model loaded or in the store, with its state and versions."""
        active = [n for n, r in self._records.items() if r.serving or r.loading]
        names = sorted(set(self.repository.model_names()) | set(active))
        return [self.describe(n) for n in names]

    def ready(self) -> bool:
        """Start-up loading finished and (strict readiness) every wanted model is serving.

        A reload never flips it: the old version serves until the new one is swapped in.
        """
        if not self._started or self.empty_store is not None:
            return False
        return not self.settings.strict_readiness or not self.not_serving()

    def not_ready_reason(self) -> str | None:
        """Why ``ready()`` is false, in a sentence (None when ready)."""
        if not self._started:
            return "the start-up models are loading"
        if self.empty_store is not None:
            return f"{self.empty_store}: not ready until a model is added and loaded"
        missing = self.not_serving() if self.settings.strict_readiness else []
        if missing:
            return f"models that should serve are not serving: {', '.join(missing)}"
        return None

    def not_serving(self) -> list[str]:
        """Models that should be serving but are not (why readiness is false)."""
        return sorted(n for n, r in self._records.items() if r.wanted and not r.serving)
