"""Reading and writing one model package directory.

``write_package`` is the one way code creates packages (``care-serve import``,
``pull``, the training pipeline): it validates the manifest, copies the weights,
writes labels and the manifest, with the sha256 of every other file in ``files``,
into a temporary directory and renames it into place, so a reader never sees a
half-written package. ``add_digests`` records the digests of a package written
before they existed. Packages are readable by every
user the umask allows (directories 0755 and files 0644 under the usual 022), so a
server running as another uid (the container's 10001) can read them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from care_serve.errors import ModelStoreError
from care_serve.store.integrity import digest_files, package_files, verify_files
from care_serve.store.manifest import LABELS_FILE, MANIFEST_FILE, SIGNATURE_FILE, Manifest

__all__ = [
    "add_digests",
    "package_path",
    "read_labels",
    "read_manifest",
    "replace_file",
    "rewrite_manifest",
    "write_package",
]


def package_path(store: str | os.PathLike[str], name: str, version: int) -> Path:
    """``<store>/<name>/<version>`` (name and version are validated by ``Manifest``)."""
    return Path(store) / name / str(version)


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def read_manifest(package_dir: str | os.PathLike[str]) -> Manifest:
    """Parse and validate ``<package_dir>/manifest.json``; ``ModelStoreError`` if invalid."""
    path = Path(package_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelStoreError(f"{path}: no {MANIFEST_FILE} in the package directory") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelStoreError(f"{path}: not readable JSON ({exc})") from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ModelStoreError(f"{path}: invalid manifest: {_format_validation(exc)}") from exc


def read_labels(package_dir: str | os.PathLike[str], manifest: Manifest) -> list[str]:
    """The class names: inline, from ``labels_file``, or ``class_<i>`` when none are given."""
    if manifest.labels is not None:
        return list(manifest.labels)
    if manifest.labels_file is None:
        return [f"class_{i}" for i in range(manifest.num_classes)]
    path = Path(package_dir) / manifest.labels_file
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelStoreError(f"{path}: cannot read the labels file ({exc})") from exc
    while labels and not labels[-1]:
        labels.pop()
    if len(labels) != manifest.num_classes:
        raise ModelStoreError(
            f"{path}: {len(labels)} labels but the manifest says num_classes="
            f"{manifest.num_classes} (one class name per line, in index order)"
        )
    return labels


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # pragma: no cover - not Linux
    os.umask(current)
    return current


def _make_readable(package_dir: Path) -> None:
    """Directories 0777 and files 0666 less the umask (mkdtemp and copy2 are stricter)."""
    mask = _umask()
    package_dir.chmod(0o777 & ~mask)
    for member in package_dir.iterdir():
        member.chmod((0o777 if member.is_dir() else 0o666) & ~mask)


def write_package(
    dest_dir: str | os.PathLike[str],
    manifest: Manifest,
    weights_path: str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model package and return its directory.

    ``dest_dir`` is either the store root (the package goes to
    ``dest_dir/<name>/<version>``) or the package directory itself (a path
    ending in ``<name>/<version>``). ``weights_path`` is copied under the name
    ``manifest.weights``. ``labels`` (class names in index order), when given,
    are written to ``labels.txt`` and the manifest points at that file.
    An existing package is replaced only with ``overwrite=True``. The manifest written
    lists the sha256 of the weights and labels in ``files`` (any ``files`` given is
    replaced).
    """
    manifest = Manifest.model_validate(manifest.model_dump())  # re-validate a copy
    dest = Path(dest_dir)
    if dest.name != str(manifest.version) or dest.parent.name != manifest.name:
        dest = package_path(dest, manifest.name, manifest.version)
    weights = Path(weights_path)
    if not weights.is_file():
        raise ModelStoreError(f"weights file not found: {weights}")
    if labels is not None:
        labels = [str(label).strip() for label in labels]
        if len(labels) != manifest.num_classes:
            raise ModelStoreError(
                f"{len(labels)} labels given but num_classes is {manifest.num_classes}"
            )
        if any(not label or "\n" in label for label in labels):
            raise ModelStoreError("labels must be non-empty single-line strings")
        manifest = manifest.model_copy(update={"labels": None, "labels_file": LABELS_FILE})
    if dest.exists() and not overwrite:
        raise ModelStoreError(f"package {dest} already exists (pass overwrite=True to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        shutil.copy2(weights, tmp / manifest.weights)
        if labels is not None:
            (tmp / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
        files = digest_files(tmp, package_files(tmp))
        manifest = manifest.model_copy(update={"files": files})
        text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
        (tmp / MANIFEST_FILE).write_text(text, encoding="utf-8")
        read_labels(tmp, read_manifest(tmp))  # what we wrote must read back
        _make_readable(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def add_digests(package_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """Record the sha256 of the package's files in its ``manifest.json`` (``files``).

    For a package written before digests existed: every other field and its order
    are kept, the manifest is replaced atomically and a signature of the old
    manifest (``manifest.sig``) is removed, since it no longer matches. Returns the
    digests recorded, or None when the manifest already lists digests and the files
    match them; ``ModelStoreError`` when they do not (the files changed: nothing is
    rewritten).
    """
    root = Path(package_dir)
    manifest = read_manifest(root)
    where = f"{manifest.name}/{manifest.version}"
    if manifest.files is not None:
        verify_files(root, manifest, where)
        return None
    path = root / MANIFEST_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    files = digest_files(root, package_files(root))
    document["files"] = files
    try:
        updated = Manifest.model_validate(document)
    except ValidationError as exc:
        raise ModelStoreError(f"{path}: invalid manifest: {_format_validation(exc)}") from exc
    verify_files(root, updated, where)  # covers the weights and labels, files unchanged since
    rewrite_manifest(root, document)
    return files


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed into place, so
    a reader sees the old file or the new one, never part of it (the umask sets the mode)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def rewrite_manifest(package_dir: Path, document: dict[str, object]) -> bool:
    """Replace ``manifest.json`` with ``document`` (already validated by the caller) and
    remove the signature of the old manifest; True when there was one (sign again)."""
    replace_file(package_dir / MANIFEST_FILE, (json.dumps(document, indent=2) + "\n").encode())
    signature = package_dir / SIGNATURE_FILE
    if not signature.exists():
        return False
    signature.unlink()
    return True
