"""Bearer-token checks: the admin token for /v1/admin, the gateway token for decisions."""

from __future__ import annotations

import secrets

from fastapi import Request

from ..errors import Unauthorized

__all__ = ["require_admin", "require_gateway"]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check(request: Request, *, route_kind: str) -> None:
    settings = request.app.state.runtime.settings
    expected = getattr(settings, f"{route_kind}_token")
    given = _bearer(request)
    if expected is None or given is None or not secrets.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthorized(route_kind=route_kind)


async def require_admin(request: Request) -> None:
    _check(request, route_kind="admin")


async def require_gateway(request: Request) -> None:
    _check(request, route_kind="gateway")
