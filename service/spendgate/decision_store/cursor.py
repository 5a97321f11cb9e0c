"""Keyset cursors for newest-first lists: an opaque token holding the last item's (time, id)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from ..errors import InvalidRequest

__all__ = ["encode_cursor", "decode_cursor"]


def encode_cursor(at: datetime, item_id: str) -> str:
    raw = json.dumps([at.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (time, id) a cursor continues after; 422 naming `cursor` when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, item_id = json.loads(raw)
        return datetime.fromisoformat(at), str(item_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(
            field="cursor", problem="is not a cursor this list returned; pass next_cursor back unchanged"
        ) from exc
