"""TLS files are checked before use: each problem names the file and the option."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from care_serve.security.tls import TlsError, TlsFiles, TlsMaterial
from tests.helpers.tls import make_authority


def test_good_files_load_with_their_expiry(tmp_path: Path) -> None:
    ca = make_authority(tmp_path)
    server = ca.issue("server", server=True, days=3)
    files = TlsFiles.load(server.cert, server.key, ca.cert_path)
    assert files.client_ca == ca.cert_pem
    left = files.not_after - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=2) < left <= dt.timedelta(days=3)


def test_an_encrypted_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    ca = make_authority(tmp_path)
    server = ca.issue("server", server=True)
    key = serialization.load_pem_private_key(server.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(TlsError, match=f"TLS key {locked} \\(--tls-key\\) is encrypted"):
        TlsFiles.load(server.cert, locked)


def test_a_reload_with_bad_files_keeps_the_old_ones(tmp_path: Path) -> None:
    ca = make_authority(tmp_path)
    server = ca.issue("server", server=True)
    material = TlsMaterial(server.cert, server.key, None)
    before = material.files
    server.key.write_text("garbage")
    with pytest.raises(TlsError, match="is not a PEM private key"):
        material.reload()
    assert material.files is before
