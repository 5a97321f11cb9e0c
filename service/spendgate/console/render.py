"""Jinja2 rendering for the console: autoescaped templates, and the security headers of every page.

Every console response carries a strict Content-Security-Policy (scripts and styles from this
origin only, no inline script or style, no framing), `no-store` caching (pages show secrets
once and live figures always), `nosniff`, and no referrer to other sites.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .. import __version__

__all__ = ["CSP", "SECURITY_HEADERS", "render", "secure"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def _segment(value: Any) -> str:
    """A value as one URL path segment or query value: everything but unreserved characters escaped."""
    return quote(str(value), safe="")


def _resets_in(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((value - datetime.now(timezone.utc)).total_seconds())
    if seconds <= 0:
        return "now"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{max(minutes, 1)}m"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def _percent(basis_points: int) -> str:
    return f"{basis_points // 100}.{basis_points % 100:02d} %"


_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(seg=_segment, resets_in=_resets_in, when=_when, percent=_percent)
#: Entity types with a console page (alerts and charges also name team members and key models).
_env.globals.update(version=__version__, linkable=frozenset({"org", "team", "user", "key", "end_user", "tag"}))


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The template rendered with `context`, with the console's security headers."""
    body = _env.get_template(template).render(**context)
    return secure(HTMLResponse(body, status_code=status_code))  # type: ignore[return-value]
