"""The model store on disk: ``<root>/<name>/<version>/manifest.json``.

Every name and version a client sends is validated against a strict pattern
before it touches the file system, and a name that resolves outside the store is
refused as a bad request (400). Every file of a package -- the version
directory, ``manifest.json``, the weights, the labels file, every file the
manifest lists a sha256 for -- must resolve inside the store too: a symlink
pointing outside is a store error (``ModelStoreError``, 422) and is never read.
Error messages name files relative to the store (``name/version/file``), never
by their absolute path. An optional ``<root>/store.json`` holds the defaults and
version policies (``care_serve.store.config``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from care_serve.errors import InvalidInput, ModelStoreError, NotFound
from care_serve.store.config import StoreConfig, read_store_config
from care_serve.store.manifest import (
    MANIFEST_FILE,
    Manifest,
    validate_model_name,
    validate_version,
)
from care_serve.store.package import read_manifest

__all__ = ["ModelRepository", "PackageInfo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageInfo:
    """A package found in the store: its directory and validated manifest."""

    path: Path
    manifest: Manifest


def check_name(name: str) -> str:
    """Validate a client-supplied model name (``InvalidInput`` if it is not one)."""
    try:
        return validate_model_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def check_version(version: int | str) -> int:
    """Validate a client-supplied version (``InvalidInput`` if it is not one)."""
    try:
        return validate_version(version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


class ModelRepository:
    """Reads packages from a store directory; re-scans on every call (stores are small)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def exists(self) -> bool:
        return self.root.is_dir()

    def _inside(self, path: Path) -> Path:
        """``path`` (named by a client) resolved; ``InvalidInput`` if it leaves the store."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InvalidInput(f"{path.name!r} resolves outside the model store")
        return resolved

    def relative(self, path: Path) -> str:
        """``path`` as shown to clients: relative to the store root (else its name only)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def _confined(self, path: Path) -> Path:
        """A package file resolved; ``ModelStoreError`` if it resolves outside the store."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise ModelStoreError(
                f"{self.relative(path)} resolves outside the model store (package files, "
                "including symlink targets, must lie inside the store)"
            )
        return resolved

    def model_names(self) -> list[str]:
        """Names of the model directories in the store (valid names only)."""
        if not self.exists():
            return []
        names = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    names.append(validate_model_name(entry.name))
                except ValueError:
                    log.warning("ignoring %s: not a valid model name", entry)
                    continue
                if not entry.resolve().is_relative_to(self.root):
                    log.warning("ignoring %s: it resolves outside the model store", entry)
                    names.pop()
        return names

    def versions(self, name: str) -> list[int]:
        """Versions of model ``name`` on disk, ascending (a directory per version)."""
        model_dir = self._inside(self.root / check_name(name))
        if not model_dir.is_dir():
            return []
        found = []
        for entry in model_dir.iterdir():
            if entry.is_dir() and entry.name.isdigit() and (entry / MANIFEST_FILE).is_file():
                try:
                    found.append(validate_version(entry.name))
                except ValueError:
                    continue
        return sorted(found)

    def package(self, name: str, version: int | str | None = None) -> PackageInfo:
        """The package of ``name`` at ``version`` (default: the highest on disk)."""
        name = check_name(name)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.model_names()) or "none"
            raise NotFound(f"model {name!r} is not in the model store (models: {known})")
        chosen = versions[-1] if version is None else check_version(version)
        if chosen not in versions:
            raise NotFound(
                f"model {name!r} has no version {chosen} in the store "
                f"(versions: {', '.join(map(str, versions))})"
            )
        package_dir = self.root / name / str(chosen)
        path = self._confined(package_dir)
        self._confined(package_dir / MANIFEST_FILE)
        try:
            manifest = read_manifest(path)
        except ModelStoreError as exc:
            raise ModelStoreError(exc.message.replace(str(path), f"{name}/{chosen}")) from exc
        if manifest.name != name or manifest.version != chosen:
            raise ModelStoreError(
                f"{name}/{chosen}/{MANIFEST_FILE}: manifest says {manifest.name}/"
                f"{manifest.version} but the package directory is {name}/{chosen}"
            )
        for member in (manifest.weights, manifest.labels_file, *(manifest.files or {})):
            if member is not None:
                self._confined(package_dir / member)
        if not (path / manifest.weights).is_file():
            raise ModelStoreError(f"{name}/{chosen}: weights file {manifest.weights!r} is missing")
        return PackageInfo(path=path, manifest=manifest)

    def latest_packages(self) -> dict[str, PackageInfo | ModelStoreError]:
        """The newest package of every model, or the error that made it invalid."""
        result: dict[str, PackageInfo | ModelStoreError] = {}
        for name in self.model_names():
            if not self.versions(name):
                continue
            try:
                result[name] = self.package(name)
            except ModelStoreError as exc:
                result[name] = exc
        return result

    def config(self) -> StoreConfig:
        """The store's ``store.json`` (defaults, version policies); re-read on every call."""
        return read_store_config(self.root)

    def fingerprint(self, name: str, version: int) -> tuple[tuple[str, int, int], ...]:
        """What identifies a package's current files (names, sizes, mtimes): the watched
        store reloads a serving version when it changes and retries a failed one only then."""
        package_dir = self.root / check_name(name) / str(check_version(version))
        entries = []
        try:
            for entry in sorted(package_dir.iterdir()):
                if entry.is_file():
                    stat = entry.stat()
                    entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            return ()
        return tuple(entries)
