"""Opaque page cursors for keyset pagination: the last key seen, bound to the query that made it.

A cursor is base64url of `{"after": <last key>, "scope": <hash of route and filters>}`. Keyset
pagination ("the rows after this key") is stable under inserts: a row inserted before the cursor
is not seen, one inserted after it is, and nothing is skipped or repeated. A cursor presented
with other filters (or to another route) would silently skip rows, so it is refused (422).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidRequest

__all__ = ["scope_of", "encode_cursor", "decode_cursor"]

_FIELD = "cursor"


def scope_of(route: str, filters: Mapping[str, Any]) -> str:
    """A short hash of the route and the filters that were set (None means not set)."""
    given = {name: value for name, value in filters.items() if value is not None}
    text = json.dumps([route, given], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(after: str | int, scope: str) -> str:
    raw = json.dumps({"after": after, "scope": scope}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, scope: str, *, kind: type[str] | type[int] = str) -> Any:
    """The key after which the page starts (None without a cursor); 422 for a foreign or broken one."""
    if cursor is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            field=_FIELD, problem="is not a cursor this service issued; pass back `next_cursor` unchanged"
        ) from exc
    if not isinstance(data, dict) or type(data.get("after")) is not kind or not isinstance(data.get("scope"), str):
        raise InvalidRequest(
            field=_FIELD, problem="is not a cursor this service issued; pass back `next_cursor` unchanged"
        )
    if data["scope"] != scope:
        raise InvalidRequest(
            field=_FIELD,
            problem="was issued for another route or other filters; repeat the filters of the first page "
            "or start again without a cursor",
        )
    return data["after"]
