"""Who may do what: the one place credentials are checked, for every transport.

Transports say what an operation needs (``Access``: open, infer or admin) and pass
the ``Authorization`` value they received (REST header, gRPC metadata) and the
client's address; ``Authorizer.admit`` authenticates, checks the scope and takes a
token from the client's rate-limit bucket, or raises ``Unauthorized`` (401 /
UNAUTHENTICATED), ``Forbidden`` (403 / PERMISSION_DENIED) or ``RateLimited`` (429 /
RESOURCE_EXHAUSTED).

Credentials: the API keys of ``api_keys_file`` (scope infer or admin) and the
``admin_token``, a shorthand admin credential. Without a key file inference is
open; without any admin credential model control (load/unload) is off.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from care_serve.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    RateLimited,
    Unauthorized,
)
from care_serve.observability.metrics import ServingMetrics
from care_serve.security.keys import KeyFileError, KeyRing, Scope
from care_serve.security.rate_limit import RateLimiter
from care_serve.settings import Settings

__all__ = ["ADMIN_TOKEN_NAME", "Access", "Authorizer", "Principal"]

Access = Literal["open", "infer", "admin"]
ADMIN_TOKEN_NAME = "admin-token"
_ENABLE_CONTROL = (
    "model control is off: start the server with an admin credential, an admin API key "
    "('care-serve keys add NAME --scope admin --api-keys FILE' and --api-keys FILE) or "
    "--admin-token TOKEN, and send it as 'Authorization: Bearer <key>'"
)


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a key's name and scope, or anonymous (``name`` None)."""

    name: str | None = None
    scope: Scope | None = None
    rate: float | None = None

    def allows(self, access: Access) -> bool:
        if access == "open":
            return True
        if self.scope is None:
            return False
        return self.scope == "admin" or access == self.scope


ANONYMOUS = Principal()


class Authorizer:
    """Checks credentials, scopes and rate limits for every transport."""

    def __init__(self, settings: Settings, metrics: ServingMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys: KeyRing | None = None
        if settings.api_keys_file is not None:
            try:
                self.keys = KeyRing(settings.api_keys_file)
            except KeyFileError as exc:
                raise ConfigurationError(str(exc)) from None
        self.limiter = RateLimiter(settings.rate_limit_burst)
        token = settings.admin_token
        self._token = token.get_secret_value().encode() if token is not None else None

    @property
    def keys_required(self) -> bool:
        """Inference needs an API key (a key file is configured)."""
        return self.keys is not None

    def model_control_enabled(self) -> bool:
        """An admin credential exists: the admin token or an admin key."""
        return self._token is not None or (self.keys is not None and self.keys.has_scope("admin"))

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The sender of ``authorization``: ANONYMOUS without one, None if it is unknown."""
        if not authorization:
            return ANONYMOUS
        scheme, _, given = authorization.partition(" ")
        secret = given.strip()
        if scheme.lower() != "bearer" or not secret:
            return None
        if self._token is not None and hmac.compare_digest(secret.encode(), self._token):
            return Principal(ADMIN_TOKEN_NAME, "admin")
        if self.keys is not None:
            entry = self.keys.lookup(secret)
            if entry is not None:
                return Principal(entry.name, entry.scope, entry.rate)
        return None

    def authorize(self, access: Access, authorization: str | None) -> Principal:
        """The principal, if it may do what ``access`` says (else 401/403)."""
        if access == "open":
            return ANONYMOUS
        principal = self.authenticate(authorization)
        if access == "infer" and not self.keys_required:
            # Inference is open; a known credential still names the client in logs/metrics.
            return principal or ANONYMOUS
        if access == "admin" and not self.model_control_enabled():
            raise Forbidden(_ENABLE_CONTROL)
        if principal is None:
            raise Unauthorized(
                "the credential sent is not known here: send 'Authorization: Bearer <key>' "
                "with a key of the server's API key file"
                + (" or its admin token" if access == "admin" else "")
            )
        if principal is ANONYMOUS:
            needed = (
                "an admin credential (an admin API key or the admin token)"
                if access == "admin"
                else "an API key"
            )
            raise Unauthorized(f"this operation needs {needed}: send 'Authorization: Bearer <key>'")
        if not principal.allows(access):
            raise Forbidden(
                f"the key {principal.name!r} has scope {principal.scope!r}; this operation "
                f"needs scope {access!r} (care-serve keys add NAME --scope {access})"
            )
        return principal

    def limit(self, principal: Principal, client: str | None) -> None:
        """Take a rate-limit token for ``principal`` (or, anonymous, its address)."""
        rate = principal.rate or self.settings.rate_limit
        if rate is None:
            return
        who = principal.name or f"address {client or 'unknown'}"
        wait = self.limiter.acquire(who, rate)
        if wait > 0:
            if self.metrics is not None:
                self.metrics.rate_limited.labels(principal.name or "").inc()
            raise RateLimited(
                f"rate limit of {rate:g} requests per second exceeded for {who}; retry in "
                f"{wait:.2f} s",
                wait,
            )

    def admit(self, access: Access, authorization: str | None, client: str | None) -> Principal:
        """Authenticate, authorize and rate-limit one request."""
        if access == "open":
            return ANONYMOUS
        try:
            principal = self.authorize(access, authorization)
        except (Unauthorized, Forbidden) as exc:
            if self.metrics is not None:
                reason = "unauthenticated" if isinstance(exc, Unauthorized) else "forbidden"
                self.metrics.auth_refused.labels(reason).inc()
            raise
        self.limit(principal, client)
        return principal

    def check_model_control(self, authorization: str | None) -> None:
        """Load/unload are allowed: an admin credential is sent, and the store is not watched."""
        self.authorize("admin", authorization)
        if self.settings.model_control == "poll":
            raise Conflict(
                "the server watches the model store (model_control poll): add, change or "
                "remove versions in the store instead; it is scanned every "
                f"{self.settings.repository_poll_s:g} s"
            )

    def check_admin(self, authorization: str | None) -> None:
        """``Unauthorized``/``Forbidden`` unless ``authorization`` carries the admin scope."""
        self.authorize("admin", authorization)
