"""Who may use the console: sign-in with the admin token, the session cookie, and CSRF checks.

The token is only ever read from a POSTed form body (never a URL), compared in constant time
with the admin token — and with the gateway token, only to say that token cannot sign in.
Every change needs the session cookie (SameSite=Strict, HttpOnly) *and* the session's CSRF
token in the form (`csrf_token`) or the `X-CSRF-Token` header (htmx sends it), and a request
whose `Origin` names another site is refused outright.
"""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import Request, Response

from ..errors import Forbidden
from ..runtime import Runtime
from .session import COOKIE, Session, SessionSigner

__all__ = ["PATH", "check_token", "current_session", "require_change", "set_session_cookie", "clear_session_cookie"]

#: Where the console lives; also the cookie's path.
PATH = "/console"


def _signer(runtime: Runtime) -> SessionSigner:
    token = runtime.settings.admin_token
    assert token is not None  # create_app generates missing tokens
    return SessionSigner(token, lifetime_seconds=runtime.settings.console_session_seconds)


def check_token(runtime: Runtime, given: str) -> Literal["admin", "gateway", "wrong"]:
    """Which token `given` is; both comparisons always run, in constant time."""
    admin, gateway = runtime.settings.admin_token, runtime.settings.gateway_token
    raw = given.strip().encode()
    is_admin = admin is not None and secrets.compare_digest(raw, admin.get_secret_value().encode())
    is_gateway = gateway is not None and secrets.compare_digest(raw, gateway.get_secret_value().encode())
    return "admin" if is_admin and raw else "gateway" if is_gateway and raw else "wrong"


def current_session(request: Request) -> Session | None:
    runtime: Runtime = request.app.state.runtime
    return _signer(runtime).verify(request.cookies.get(COOKIE), now=runtime.clock())


def set_session_cookie(request: Request, response: Response) -> None:
    runtime: Runtime = request.app.state.runtime
    signer = _signer(runtime)
    value, _ = signer.issue(now=runtime.clock())
    response.set_cookie(
        COOKIE, value, max_age=signer.lifetime_seconds, path=PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":  # not sent, or withheld by a privacy setting: the token decides
        return True
    return origin.rstrip("/") == f"{request.url.scheme}://{request.url.netloc}"


def require_change(request: Request, form: dict[str, str]) -> Session:
    """The session of a change request with a valid CSRF token, or 403 `forbidden`."""
    if not _same_origin(request):
        raise Forbidden(reason="the change was sent from another site")
    session = current_session(request)
    if session is None:
        raise Forbidden(reason="the console session is missing or expired")
    given = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not SessionSigner.csrf_ok(session, given):
        raise Forbidden(reason="the change has no valid CSRF token")
    return session
