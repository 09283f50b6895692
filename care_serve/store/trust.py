"""Whether a package may load: its signature and the sha256 of its files, checked at load.

``verify_package`` runs before a version's weights load (in the loader's worker
thread, off the event loop). In order: with a public key configured, a package
that has ``manifest.sig`` must verify with it, and with ``require_signed`` a
package without one is refused; the manifest read for the signature must be the
one being loaded; then every file ``files`` lists must match its sha256. A
package without ``files`` (written before digests existed) still loads,
unverified, unless it is signed or signatures are required: a signature over a
manifest without digests would vouch for no weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from care_serve.errors import ModelStoreError
from care_serve.store.integrity import verify_files
from care_serve.store.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from care_serve.store.signing import (
    Ed25519PublicKey,
    check_signature,
    key_id,
    load_public_key,
    read_signature,
)

__all__ = ["TrustPolicy", "TrustReport", "verify_package"]


@dataclass(frozen=True)
class TrustPolicy:
    """What a package needs to load: a valid signature by ``public_key`` when it has one
    (``public_key`` set), and one at all (``require_signed``)."""

    public_key: Ed25519PublicKey | None = None
    require_signed: bool = False

    def __post_init__(self) -> None:
        if self.require_signed and self.public_key is None:
            raise ValueError(
                "require_signed_packages needs package_public_key: the public key that "
                "checks the signatures"
            )

    @classmethod
    def from_key_file(
        cls, path: str | os.PathLike[str] | None, require_signed: bool = False
    ) -> TrustPolicy:
        """The policy of the settings ``package_public_key`` / ``require_signed_packages``."""
        return cls(load_public_key(path) if path is not None else None, require_signed)

    @property
    def key_id(self) -> str | None:
        """The id of the public key (None without one)."""
        return key_id(self.public_key) if self.public_key is not None else None


@dataclass(frozen=True)
class TrustReport:
    """What ``verify_package`` checked: the files against their sha256, and the key id
    whose signature verified (None when no signature was checked)."""

    files_verified: bool
    signed_by: str | None


def verify_package(
    package_dir: str | os.PathLike[str], manifest: Manifest, policy: TrustPolicy, where: str
) -> TrustReport:
    """Check the package of ``manifest`` in ``package_dir`` under ``policy``.

    ``where`` names the package in messages (``name/version``). A refused package is a
    ``ModelStoreError`` (422) saying why: no signature, a bad signature (with the key
    id), a file missing or not matching its sha256.
    """
    root = Path(package_dir)
    try:
        manifest_bytes = (root / MANIFEST_FILE).read_bytes()
    except OSError as exc:
        raise ModelStoreError(
            f"{where}/{MANIFEST_FILE}: cannot be read ({exc.strerror or exc})"
        ) from None
    signed_by = None
    if policy.public_key is not None:
        signature = read_signature(root, where)
        if signature is None and policy.require_signed:
            raise ModelStoreError(
                f"{where}: no signature: require_signed_packages is on and the package has no "
                f"{SIGNATURE_FILE}; sign it with the private key of key {policy.key_id} "
                "(care-serve sign PACKAGE_DIR --key PRIVATE_KEY)"
            )
        if signature is not None:
            check_signature(manifest_bytes, signature, policy.public_key, where)
            signed_by = policy.key_id
    if _parse(manifest_bytes) != manifest.model_dump_json():
        raise ModelStoreError(f"{where}: {MANIFEST_FILE} changed while it loaded; load it again")
    if manifest.files is None:
        if signed_by is not None:
            raise ModelStoreError(
                f"{where}: the signed {MANIFEST_FILE} lists no file digests ('files'), so its "
                "signature vouches for no weights; add them and sign again (care-serve sign "
                "PACKAGE_DIR --add-digests --key PRIVATE_KEY)"
            )
        return TrustReport(files_verified=False, signed_by=None)
    verify_files(root, manifest, where)
    return TrustReport(files_verified=True, signed_by=signed_by)


def _parse(manifest_bytes: bytes) -> str | None:
    """The manifest in ``manifest_bytes`` as canonical JSON (None when it does not parse);
    compared as JSON, so a NaN in the model card equals itself."""
    try:
        return Manifest.model_validate(json.loads(manifest_bytes)).model_dump_json()
    except (ValueError, ValidationError):
        return None
