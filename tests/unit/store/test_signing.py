"""Ed25519 package signatures: keys, manifest.sig, and the check before a version loads."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from care_serve.errors import ModelStoreError
from care_serve.settings import Settings
from care_serve.store import read_manifest, write_package
from care_serve.store.signing import (
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    sign_package,
)
from care_serve.store.trust import TrustPolicy, TrustReport, verify_package
from tests.helpers.packages import LABELS, make_manifest


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public, _ = generate_key(tmp_path / "signing-key")
    return private, public


def _package(tmp_path: Path, version: int = 1) -> Path:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"weights")
    return write_package(tmp_path / "store", make_manifest(version=version), weights, LABELS)


def _check(package: Path, public: Path | None, require: bool = False) -> TrustReport:
    policy = TrustPolicy.from_key_file(public, require)
    return verify_package(package, read_manifest(package), policy, "tiny/1")


def test_generate_key_writes_a_private_key_0600_and_the_public_key_beside_it(
    tmp_path: Path,
) -> None:
    private, public, kid = generate_key(tmp_path / "k")
    assert (private, public) == (tmp_path / "k", tmp_path / "k.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) & 0o044  # the public key is readable
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert key_id(load_private_key(private)) == key_id(load_public_key(public)) == kid
    assert len(kid) == 16
    before = private.read_bytes()
    with pytest.raises(ValueError, match="already exists; refusing to overwrite"):
        generate_key(private)
    assert private.read_bytes() == before
    (tmp_path / "other.pub").write_text("someone's public key")
    with pytest.raises(ValueError, match=r"other\.pub already exists"):
        generate_key(tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match="does not exist"):
        generate_key(tmp_path / "no-such-dir" / "k")


def test_sign_and_verify_round_trip(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    package = _package(tmp_path)
    signature = sign_package(package, load_private_key(private))
    assert signature == package / "manifest.sig"
    assert len(base64.b64decode(signature.read_text().strip(), validate=True)) == 64
    kid = key_id(load_public_key(public))
    assert _check(package, public, require=True) == TrustReport(True, kid)
    assert _check(package, public) == TrustReport(True, kid)
    assert _check(package, None) == TrustReport(True, None)  # no key: the signature is unread


def test_a_tampered_manifest_is_refused_naming_the_key(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    package = _package(tmp_path)
    sign_package(package, load_private_key(private))
    path = package / "manifest.json"
    document = json.loads(path.read_text())
    document["batching"]["max_batch_size"] = 2  # still a valid manifest, no longer the signed one
    path.write_text(json.dumps(document, indent=2) + "\n")
    with pytest.raises(ModelStoreError) as info:
        _check(package, public)
    message = info.value.message
    assert message.startswith("tiny/1: bad signature: manifest.sig does not verify with key ")
    assert key_id(load_public_key(public)) in message and "care-serve sign" in message
    assert info.value.status_code == 422


def test_a_signature_by_another_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, public = keys
    other, _, _ = generate_key(tmp_path / "other-key")
    package = _package(tmp_path)
    sign_package(package, load_private_key(other))
    with pytest.raises(ModelStoreError, match="bad signature"):
        _check(package, public)


def test_tampered_weights_of_a_signed_package_are_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    package = _package(tmp_path)
    sign_package(package, load_private_key(private))
    (package / "model.onnx").write_bytes(b"other weights")
    with pytest.raises(ModelStoreError, match=r"^tiny/1/model\.onnx: sha256 .* does not match"):
        _check(package, public, require=True)


def test_a_missing_signature_is_refused_only_when_required(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    _, public = keys
    package = _package(tmp_path)
    assert _check(package, public) == TrustReport(True, None)  # not required: loads
    with pytest.raises(ModelStoreError) as info:
        _check(package, public, require=True)
    message = info.value.message
    assert message.startswith("tiny/1: no signature: require_signed_packages is on")
    assert key_id(load_public_key(public)) in message


def test_a_malformed_signature_is_refused_when_checked(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    _, public = keys
    package = _package(tmp_path)
    for junk in ("not base64 at all!", base64.b64encode(b"short").decode(), "A" * 5000):
        (package / "manifest.sig").write_text(junk)
        with pytest.raises(ModelStoreError, match=r"manifest\.sig: not a signature"):
            _check(package, public)
        assert _check(package, None) == TrustReport(True, None)


def test_a_signed_manifest_without_digests_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    package = _package(tmp_path)
    path = package / "manifest.json"
    document = json.loads(path.read_text())
    del document["files"]
    path.write_text(json.dumps(document))
    assert _check(package, public) == TrustReport(False, None)  # unsigned and old: unverified
    sign_package(package, load_private_key(private))
    with pytest.raises(ModelStoreError, match="lists no file digests"):
        _check(package, public)


def test_a_manifest_changed_since_it_was_read_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path)
    stale = read_manifest(package)
    write_package(package, make_manifest(postprocessing={"top_k": 1}), package / "model.onnx",
                  LABELS, overwrite=True)  # fmt: skip
    with pytest.raises(ModelStoreError, match="changed while it loaded"):
        verify_package(package, stale, TrustPolicy(), "tiny/1")


def test_key_files_are_checked_with_clear_messages(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    with pytest.raises(ValueError, match="does not exist"):
        load_public_key(tmp_path / "nope.pub")
    with pytest.raises(ValueError, match="holds a private key; give the public key"):
        load_public_key(private)
    with pytest.raises(ValueError, match="is not a PEM private key"):
        load_private_key(public)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match="is not a PEM public key"):
        load_public_key(garbage)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_public = tmp_path / "rsa.pub"
    rsa_public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValueError, match="package signatures use Ed25519 keys"):
        load_public_key(rsa_public)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        load_private_key(private).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match="is encrypted"):
        load_private_key(encrypted)


def test_required_signatures_need_a_public_key() -> None:
    with pytest.raises(ValueError, match="require_signed_packages needs package_public_key"):
        TrustPolicy(require_signed=True)
    with pytest.raises(ValidationError, match="require_signed_packages needs package_public_key"):
        Settings(require_signed_packages=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_verifies_a_signature_as_the_docs_say(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    package = _package(tmp_path)
    sign_package(package, load_private_key(private))
    raw = tmp_path / "manifest.sig.bin"
    raw.write_bytes(base64.b64decode((package / "manifest.sig").read_text()))
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
               "-in", str(package / "manifest.json"), "-sigfile", str(raw)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "Signature Verified Successfully" in result.stdout


def test_a_nan_in_the_model_card_is_not_a_changed_manifest(tmp_path: Path) -> None:
    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"weights")
    card = {"metrics": {"final_loss": float("nan")}}
    package = write_package(tmp_path / "store", make_manifest(model_card=card), weights, LABELS)
    report = verify_package(package, read_manifest(package), TrustPolicy(), "tiny/1")
    assert report == TrustReport(True, None)
