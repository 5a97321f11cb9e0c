"""Bearer-token checks: the admin token for /v1/admin, the gateway token for decisions."""

from __future__ import annotations

import secrets

from fastapi import Request
from pydantic import SecretStr

from ..errors import Unauthorized

__all__ = ["require_admin", "require_gateway", "token_matches"]


def token_matches(authorization: str | bytes | None, expected: SecretStr | None) -> bool:
    """Whether an Authorization header value is `Bearer <expected>` (compared in constant time)."""
    if expected is None or not authorization:
        return False
    header = authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return scheme.lower() == "bearer" and bool(token) and secrets.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    )


def _check(request: Request, *, route_kind: str) -> None:
    expected = getattr(request.app.state.runtime.settings, f"{route_kind}_token")
    if not token_matches(request.headers.get("authorization"), expected):
        raise Unauthorized(route_kind=route_kind)


async def require_admin(request: Request) -> None:
    _check(request, route_kind="admin")


async def require_gateway(request: Request) -> None:
    _check(request, route_kind="gateway")
