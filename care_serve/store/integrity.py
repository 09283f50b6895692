"""The sha256 of a package's files: recorded when a package is written, checked when it loads.

``manifest.json`` lists under ``files`` the lowercase hex sha256 of every file of
the package other than itself and its signature (``manifest.sig``), by file name.
``write_package`` records them; the server checks them before it loads a version
(``care_serve.store.trust``). Files are read in 1 MiB chunks, never whole.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from care_serve.errors import ModelStoreError
from care_serve.store.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest, validate_file_name

__all__ = [
    "CHUNK_BYTES",
    "REWRITE_HINT",
    "digest_files",
    "package_files",
    "sha256_file",
    "verify_files",
]

CHUNK_BYTES = 1 << 20
# What an operator does about a package whose files do not match their digests.
REWRITE_HINT = (
    "write the package again (care-serve import, or care-serve pull with --overwrite) "
    "or copy it again from where it came from"
)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The lowercase hex sha256 of the file at ``path``, read in ``CHUNK_BYTES`` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def package_files(package_dir: str | os.PathLike[str]) -> list[str]:
    """The files of a package that ``files`` lists: every regular file but ``manifest.json``,
    ``manifest.sig`` and hidden files (``ModelStoreError`` for a name a manifest cannot hold)."""
    names = []
    for entry in sorted(Path(package_dir).iterdir()):
        if entry.name in (MANIFEST_FILE, SIGNATURE_FILE) or entry.name.startswith("."):
            continue
        if not entry.is_file():
            continue
        try:
            validate_file_name(entry.name, "a package file's name")
        except ValueError as exc:
            raise ModelStoreError(f"{entry.parent.name}/{entry.name}: {exc}") from None
        names.append(entry.name)
    return names


def digest_files(package_dir: str | os.PathLike[str], names: list[str]) -> dict[str, str]:
    """``{name: sha256}`` of the files ``names`` of ``package_dir``."""
    root = Path(package_dir)
    return {name: sha256_file(root / name) for name in names}


def verify_files(package_dir: str | os.PathLike[str], manifest: Manifest, where: str) -> None:
    """Check every file ``manifest.files`` lists against its sha256.

    The weights file and the labels file must be listed. ``where`` names the package
    in messages (``name/version``); a mismatch, a missing file or an unlisted weights
    or labels file is a ``ModelStoreError`` (422) naming the file and what to do.
    """
    files = manifest.files
    if files is None:
        raise ModelStoreError(f"{where}: {MANIFEST_FILE} lists no file digests ('files')")
    needed = [manifest.weights, *([manifest.labels_file] if manifest.labels_file else [])]
    for name in needed:
        if name not in files:
            raise ModelStoreError(
                f"{where}/{name}: {MANIFEST_FILE} lists no sha256 for it ('files' must cover "
                f"the weights and the labels file); {REWRITE_HINT}"
            )
    root = Path(package_dir)
    for name, expected in sorted(files.items()):
        path = root / name
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise ModelStoreError(
                f"{where}/{name}: listed in {MANIFEST_FILE} but missing; {REWRITE_HINT}"
            ) from None
        except OSError as exc:
            raise ModelStoreError(
                f"{where}/{name}: cannot be read to check its sha256 ({exc.strerror or exc})"
            ) from None
        if actual != expected:
            raise ModelStoreError(
                f"{where}/{name}: sha256 {actual} does not match {expected} in {MANIFEST_FILE}; "
                f"the file changed after the package was written (tampered, corrupted or "
                f"half-copied): {REWRITE_HINT}"
            )
