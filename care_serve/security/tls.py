"""The server's TLS files: checked before start, re-read on SIGHUP.

``TlsFiles.load`` reads the certificate chain, the private key and (mutual TLS) the
client CA, and refuses them with a message naming the file when one is missing,
unreadable, not PEM, or when the key does not belong to the certificate. The REST
server reloads them into its ``ssl.SSLContext``; gRPC gets them through dynamic
credentials, which ask ``TlsMaterial.fetch`` on each new connection.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = ["TlsError", "TlsFiles", "TlsMaterial"]

log = logging.getLogger(__name__)


class TlsError(ValueError):
    """A TLS file cannot be used; the message names it and says why."""


def _read(path: Path, what: str, option: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{what} {path} ({option}) does not exist") from None
    except OSError as exc:
        raise TlsError(f"cannot read {what} {path} ({option}): {exc.strerror}") from None


def _certificates(data: bytes, path: Path, what: str, option: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError(f"{what} {path} ({option}) holds no PEM certificate")
    return certs


def _public_bytes(key: object) -> bytes:
    assert isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    )
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of one consistent set of files."""

    cert_path: Path
    key_path: Path
    client_ca_path: Path | None
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    not_after: dt.datetime

    @classmethod
    def load(cls, cert: Path, key: Path, client_ca: Path | None = None) -> TlsFiles:
        """Read and check the files (``TlsError`` naming the file that is wrong)."""
        chain = _read(cert, "TLS certificate", "--tls-cert")
        leaf = _certificates(chain, cert, "TLS certificate", "--tls-cert")[0]
        key_pem = _read(key, "TLS key", "--tls-key")
        try:
            private = serialization.load_pem_private_key(key_pem, password=None)
        except TypeError:
            raise TlsError(
                f"TLS key {key} (--tls-key) is encrypted: give an unencrypted PEM key "
                "(protect it with file permissions or a Secret)"
            ) from None
        except (ValueError, Exception) as exc:  # cryptography raises several kinds
            if isinstance(exc, TlsError):
                raise
            raise TlsError(f"TLS key {key} (--tls-key) is not a PEM private key") from None
        try:
            matches = _public_bytes(private.public_key()) == _public_bytes(leaf.public_key())
        except AssertionError:
            matches = False
        if not matches:
            raise TlsError(
                f"TLS key {key} (--tls-key) does not belong to the certificate {cert} "
                "(--tls-cert): give the key the certificate was issued for"
            )
        ca_pem = None
        if client_ca is not None:
            ca_pem = _read(client_ca, "client CA", "--tls-client-ca")
            _certificates(ca_pem, client_ca, "client CA", "--tls-client-ca")
        # Also what ssl itself accepts (e.g. a chain in the wrong order).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise TlsError(f"TLS certificate {cert} and key {key} are refused: {exc}") from None
        return cls(cert, key, client_ca, chain, key_pem, ca_pem, leaf.not_valid_after_utc)

    def warn_if_expiring(self, days: int = 14) -> None:
        left = self.not_after - dt.datetime.now(dt.timezone.utc)
        if left.total_seconds() < 0:
            log.warning("TLS certificate %s expired on %s", self.cert_path, self.not_after)
        elif left < dt.timedelta(days=days):
            log.warning(
                "TLS certificate %s expires in %d days (%s)",
                self.cert_path,
                left.days,
                self.not_after,
            )

    def grpc_config(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca
        )


class TlsMaterial:
    """The TLS files in use, for both servers; ``reload`` swaps them for new ones."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.files = TlsFiles.load(cert, key, client_ca)
        self.files.warn_if_expiring()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()
        self._contexts: list[ssl.SSLContext] = []

    @property
    def mutual(self) -> bool:
        return self.files.client_ca_path is not None

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config keyword arguments for these files."""
        options: dict[str, Any] = {
            "ssl_certfile": str(self.files.cert_path),
            "ssl_keyfile": str(self.files.key_path),
        }
        if self.files.client_ca_path is not None:
            options["ssl_ca_certs"] = str(self.files.client_ca_path)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        return options

    def track(self, context: ssl.SSLContext | None) -> None:
        """Reload into ``context`` (the REST server's) as well."""
        if context is not None:
            self._contexts.append(context)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials that pick up ``reload`` on the next new connection."""
        return grpc.dynamic_ssl_server_credentials(
            self.files.grpc_config(),
            self._fetch,
            require_client_authentication=self.mutual,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> None:
        """Re-read the same paths; ``TlsError`` (and nothing changes) if they are bad now."""
        files = TlsFiles.load(self.files.cert_path, self.files.key_path, self.files.client_ca_path)
        for context in self._contexts:
            context.load_cert_chain(files.cert_path, files.key_path)
            if files.client_ca_path is not None:
                context.load_verify_locations(cafile=str(files.client_ca_path))
        with self._lock:
            self.files = files
            self._pending = files.grpc_config()
        files.warn_if_expiring()
        log.info("TLS certificate %s reloaded (valid until %s)", files.cert_path, files.not_after)
