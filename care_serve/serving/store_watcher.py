"""The watched store (``model_control = poll``): the store on disk drives what serves.

Every ``repository_poll_s`` the watcher re-reads ``store.json`` and, for each
model the ``models`` setting covers (``*`` = every model in the store), makes
what serves match the store and the model's version policy
(``ModelManager.apply_policy``): new versions and new models load, a version whose
files changed reloads (zero-failure swap), versions and models removed from the
store unload. A new version that fails to load leaves the old one serving; the
failure shows in the model listing and in ``care_model_load_error``, and the
version is retried only once its files change.
"""

from __future__ import annotations

import logging

from care_serve.errors import CareServeError
from care_serve.serving.manager import ModelManager
from care_serve.serving.periodic import Periodic
from care_serve.store.config import VersionPolicy

__all__ = ["StoreWatcher"]

log = logging.getLogger(__name__)


class StoreWatcher:
    """Polls the store on the server's event loop; ``start()`` / ``await stop()``."""

    def __init__(self, manager: ModelManager, interval_s: float) -> None:
        self.manager = manager
        self.polls = 0
        self._periodic = Periodic("store-watcher", interval_s, self.poll_once)

    async def poll_once(self) -> list[str]:
        """One scan of the store; returns a line per change (also logged)."""
        manager = self.manager
        manager.refresh_config()
        # The models the ``models`` setting covers now (``*``: every model in the store).
        targets = manager.startup_targets()
        names = {name for name, _ in targets}
        pinned = {name: version for name, version in targets if version is not None}
        changes: list[str] = []
        for name in sorted(names | set(manager.loaded_versions())):
            try:
                disk = manager.repository.versions(name)
                manager.forget_errors(name, set(disk))
                if name not in names or not disk:
                    if name in manager.loaded_versions():
                        await manager.unload(name)
                        changes.append(f"unloaded {name}: it left the store")
                    continue
                policy = VersionPolicy(specific=(pinned[name],)) if name in pinned else None
                changes.extend(await manager.apply_policy(name, reload=False, policy=policy))
            except CareServeError as exc:  # one model's trouble never stops the others
                changes.append(f"FAILED {name}: {exc.message}")
        self.polls += 1
        for line in changes:
            (log.warning if line.startswith("FAILED") else log.info)("store watch: %s", line)
        return changes

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
