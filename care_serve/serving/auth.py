"""Who may do what: the one place credentials are checked, for every transport."""

from __future__ import annotations

import hmac

from care_serve.errors import Conflict, Unauthorized
from care_serve.settings import Settings

__all__ = ["Authorizer"]


class Authorizer:
    """Checks the ``Authorization`` value a transport received (REST header, gRPC metadata)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_admin(self, authorization: str | None) -> None:
        """``Unauthorized`` unless the admin token is unset or sent as ``Bearer <token>``."""
        token = self.settings.admin_token
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized(
                "this operation needs the admin token: send 'Authorization: Bearer <token>'"
            )

    def check_model_control(self, authorization: str | None) -> None:
        """Load/unload are allowed: the admin token matches and the store is not watched."""
        self.check_admin(authorization)
        if self.settings.model_control == "poll":
            raise Conflict(
                "the server watches the model store (model_control poll): add, change or "
                "remove versions in the store instead; it is scanned every "
                f"{self.settings.repository_poll_s:g} s"
            )
