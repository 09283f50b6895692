"""Ed25519 signatures of model packages: keys, ``manifest.sig``, signing and checking.

A package's signature is ``<package>/manifest.sig``: one line, the standard
base64 of the 64-byte Ed25519 signature over the exact bytes of
``manifest.json``. The manifest holds the sha256 of every other file of the
package (``files``), so the signature covers the weights and labels too. Keys
are PEM files: the private key PKCS#8 unencrypted (mode 0600), the public key
SubjectPublicKeyInfo; ``openssl pkeyutl -verify -rawin`` checks a signature
with the same files. A key is named by its id, the first 16 hex digits of the
sha256 of its 32 raw public bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from care_serve.errors import ModelStoreError
from care_serve.store.manifest import MANIFEST_FILE, SIGNATURE_FILE
from care_serve.store.package import replace_file

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "check_signature",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_signature",
    "sign_package",
]

MAX_KEY_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 1024
SIGNATURE_BYTES = 64


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key: how messages name a key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"{what} {path} is larger than any PEM key ({MAX_KEY_BYTES} bytes)")
    return data


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path``; ``ValueError`` saying what is wrong."""
    path = Path(path)
    data = _read_key_file(path, "public key")
    if b"PRIVATE KEY" in data:
        raise ValueError(
            f"{path} holds a private key; give the public key (care-serve sign --generate-key "
            "writes it beside the private key, as <key>.pub)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is a {type(key).__name__}; package signatures use Ed25519 keys")
    return key


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (unencrypted); ``ValueError`` if not."""
    path = Path(path)
    data = _read_key_file(path, "private key")
    if b"PRIVATE KEY" not in data:
        raise ValueError(
            f"{path} is not a PEM private key (-----BEGIN PRIVATE KEY-----); sign with the "
            "private key, the server checks with the public one"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(
            f"{path} is encrypted; care-serve signs with unencrypted PEM keys (keep the file "
            "mode 0600, or decrypt it with openssl pkey)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not a readable PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is a {type(key).__name__}; package signatures use Ed25519 keys")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never replacing a file) with ``data`` and exactly ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def generate_key(path: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key: the private key at ``path`` (mode 0600) and the public key
    at ``path.pub`` (0644). Refuses to replace either file; returns both paths and the key id."""
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for target in (private_path, public_path):
        if target.exists() or target.is_symlink():
            raise ValueError(f"{target} already exists; refusing to overwrite a key file")
    if not private_path.parent.is_dir():
        raise ValueError(f"the directory {private_path.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _write_new(private_path, private_pem, 0o600)
    except FileExistsError:
        raise ValueError(
            f"{private_path} already exists; refusing to overwrite a key file"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot write {private_path} ({exc.strerror or exc})") from None
    try:
        _write_new(public_path, public_pem, 0o644)
    except OSError as exc:
        private_path.unlink(missing_ok=True)  # never leave half a key pair
        if isinstance(exc, FileExistsError):
            raise ValueError(
                f"{public_path} already exists; refusing to overwrite a key file"
            ) from None
        raise ValueError(f"cannot write {public_path} ({exc.strerror or exc})") from None
    return private_path, public_path, key_id(key)


def sign_package(package_dir: str | os.PathLike[str], key: Ed25519PrivateKey) -> Path:
    """Sign the exact bytes of ``package_dir/manifest.json``; write (or replace)
    ``manifest.sig`` atomically and return its path."""
    root = Path(package_dir)
    manifest_bytes = (root / MANIFEST_FILE).read_bytes()
    signature = key.sign(manifest_bytes)
    path = root / SIGNATURE_FILE
    replace_file(path, base64.b64encode(signature) + b"\n")
    return path


def read_signature(package_dir: str | os.PathLike[str], where: str) -> bytes | None:
    """The signature bytes of a package (None when it has no ``manifest.sig``);
    ``ModelStoreError`` when the file is not one base64 Ed25519 signature."""
    path = Path(package_dir) / SIGNATURE_FILE
    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelStoreError(
            f"{where}/{SIGNATURE_FILE}: cannot be read ({exc.strerror or exc})"
        ) from None
    try:
        if len(text) > MAX_SIGNATURE_BYTES:
            raise ValueError("too long")
        signature = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error):
        signature = b""
    if len(signature) != SIGNATURE_BYTES:
        raise ModelStoreError(
            f"{where}/{SIGNATURE_FILE}: not a signature (one line of base64 holding the "
            f"{SIGNATURE_BYTES}-byte Ed25519 signature); sign the package again with "
            "care-serve sign"
        )
    return signature


def check_signature(
    manifest_bytes: bytes, signature: bytes, public_key: Ed25519PublicKey, where: str
) -> None:
    """``ModelStoreError`` unless ``signature`` signs ``manifest_bytes`` with ``public_key``."""
    try:
        public_key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise ModelStoreError(
            f"{where}: bad signature: {SIGNATURE_FILE} does not verify with key "
            f"{key_id(public_key)} (package_public_key); {MANIFEST_FILE} changed after it was "
            "signed, or another key signed it: sign the package again with the private key of "
            "that public key (care-serve sign)"
        ) from None
