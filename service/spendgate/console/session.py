"""Console sessions: an HMAC-signed, expiring cookie, and the CSRF token derived from it.

The signing key is derived from the admin token (HMAC-SHA256 of a fixed label), so every
replica that shares the admin token accepts the same cookies without a session store, and
rotating the admin token ends every console session at once. The cookie carries only a random
session id and its expiry; the CSRF token is an HMAC of that id under the same key, so it is
known to the server without being stored and differs per session (synchronizer pattern).
Signing out deletes the cookie in that browser; the cookie also stops working at its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import NamedTuple

from pydantic import SecretStr

__all__ = ["COOKIE", "Session", "SessionSigner"]

#: The cookie name; `__Host-` would force Secure, which plain-http local use cannot send.
COOKIE = "spendgate_console"
_KEY_LABEL = b"spendgate-console-session-v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Session(NamedTuple):
    session_id: str
    expires_at: int
    csrf_token: str


class SessionSigner:
    """Signs and checks session cookies with a key derived from the admin token."""

    def __init__(self, admin_token: SecretStr, *, lifetime_seconds: int) -> None:
        self._key = hmac.new(admin_token.get_secret_value().encode(), _KEY_LABEL, hashlib.sha256).digest()
        self.lifetime_seconds = lifetime_seconds

    def _mac(self, label: str, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{label}:{payload}".encode(), hashlib.sha256).digest())

    def _session(self, session_id: str, expires_at: int) -> Session:
        return Session(session_id, expires_at, self._mac("csrf", session_id))

    def issue(self, *, now: datetime) -> tuple[str, Session]:
        """A new session and the cookie value that carries it."""
        session = self._session(secrets.token_urlsafe(18), int(now.timestamp()) + self.lifetime_seconds)
        payload = _b64(json.dumps({"sid": session.session_id, "exp": session.expires_at}).encode())
        return f"{payload}.{self._mac('session', payload)}", session

    def verify(self, cookie: str | None, *, now: datetime) -> Session | None:
        """The session a cookie carries, or None when it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac("session", payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session_id, expires_at = str(data["sid"]), int(data["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires_at <= now.timestamp():
            return None
        return self._session(session_id, expires_at)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), session.csrf_token.encode())
