"""API key files: keys stored as hashes, with a scope and an optional rate limit.

A key is ``care_`` and 43 URL-safe characters (256 random bits); the file keeps only
its SHA-256, which is safe for random keys of that length (nothing to guess from the
hash), and lets the server find a key with one dictionary look-up. The file is JSON::

    {"version": 1, "keys": [{"name": "camera-1", "scope": "infer", "rate": 5.0,
                             "sha256": "<hex>", "created": "2026-12-02T10:00:00+00:00"}]}

``care-serve keys add/list/revoke`` edit it; the server re-reads it when it changes
(``KeyRing``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "ApiKey",
    "KeyFile",
    "KeyFileError",
    "KeyRing",
    "Scope",
    "hash_key",
    "new_key",
]

log = logging.getLogger(__name__)

Scope = Literal["infer", "admin"]
SCOPES: tuple[Scope, ...] = ("infer", "admin")
KEY_PREFIX = "care_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed (the message names it)."""


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 (hex) the file stores for ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class ApiKey(BaseModel):
    """One key of the file: who it is, what it may do, how fast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Shown in logs and metrics (never the key itself).")
    scope: Scope = Field(description="infer, or admin (which includes infer).")
    rate: float | None = Field(default=None, gt=0, description="Requests per second.")
    sha256: str = Field(description="SHA-256 of the key, lowercase hex.")
    created: str = Field(default="", description="When the key was added (ISO 8601).")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(
                f"invalid key name {value!r}: 1-64 letters, digits, '_', '-', '.', '@', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _HEX_RE.fullmatch(value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    def allows(self, scope: Scope) -> bool:
        """admin includes infer."""
        return self.scope == "admin" or scope == self.scope


class KeyFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    keys: list[ApiKey] = Field(default_factory=list)

    @classmethod
    def read(cls, path: Path, *, missing_ok: bool = False) -> KeyFile:
        """Parse ``path``; ``KeyFileError`` naming it when it cannot be used."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise KeyFileError(
                f"API key file {path} does not exist: create it with "
                f"'care-serve keys add NAME --scope infer --api-keys {path}'"
            ) from None
        except OSError as exc:
            raise KeyFileError(f"cannot read API key file {path}: {exc.strerror}") from None
        try:
            keys = cls.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            reason = (
                str(exc).splitlines()[0]
                if isinstance(exc, json.JSONDecodeError)
                else (
                    "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                )
            )
            raise KeyFileError(
                f"API key file {path} is not a care-serve key file ({reason}); it is written "
                "by 'care-serve keys add'"
            ) from None
        names = [k.name for k in keys.keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise KeyFileError(f"API key file {path} names {', '.join(duplicates)} twice")
        return keys

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically, readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.model_dump_json(indent=2) + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, name: str, scope: Scope, rate: float | None = None) -> str:
        """Add a key called ``name``; returns the key (the file keeps only its hash)."""
        if any(k.name == name for k in self.keys):
            raise KeyFileError(f"a key named {name!r} exists: revoke it first or pick another")
        key = new_key()
        created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        try:
            entry = ApiKey(name=name, scope=scope, rate=rate, sha256=hash_key(key), created=created)
        except ValidationError as exc:
            raise KeyFileError("; ".join(e["msg"] for e in exc.errors())) from None
        self.keys.append(entry)
        return key

    def revoke(self, name: str) -> None:
        """Remove the key called ``name``."""
        kept = [k for k in self.keys if k.name != name]
        if len(kept) == len(self.keys):
            known = ", ".join(k.name for k in self.keys) or "none"
            raise KeyFileError(f"no key named {name!r} (keys: {known})")
        self.keys = kept


class KeyRing:
    """The server's view of a key file, re-read when the file changes.

    ``lookup`` checks the file's modification time at most every ``check_s`` seconds.
    A file that turns bad while serving is logged and the keys read before keep working.
    """

    def __init__(self, path: Path, check_s: float = 1.0) -> None:
        self.path = path
        self.check_s = check_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._by_hash = self._index(KeyFile.read(path))
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    @staticmethod
    def _index(keys: KeyFile) -> dict[str, ApiKey]:
        return {k.sha256: k for k in keys.keys}

    def refresh(self) -> None:
        """Re-read the file if it changed since the last read."""
        stamp = self._stat()
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._by_hash = self._index(KeyFile.read(self.path))
            except KeyFileError as exc:
                log.error("%s; the keys read before keep working", exc)
                return
            log.info("API key file %s re-read: %d keys", self.path, len(self._by_hash))

    def lookup(self, key: str) -> ApiKey | None:
        """The entry of ``key``, or None when the file does not hold it."""
        now = time.monotonic()
        if now - self._checked >= self.check_s:
            self._checked = now
            self.refresh()
        return self._by_hash.get(hash_key(key))

    def has_scope(self, scope: Scope) -> bool:
        """Some key of the file has ``scope`` (admin: model control is possible)."""
        self.refresh()
        return any(k.allows(scope) for k in self._by_hash.values())
