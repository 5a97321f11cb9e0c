"""What the integration reads from a LiteLLM call and leaves in it, as small typed values (no litellm import).

The pre-call hook leaves a `Ticket` in the call's metadata (`data["metadata"]["spendgate"]`);
LiteLLM hands that metadata back to the success and failure events
(`kwargs["litellm_params"]["metadata"]`), which is how an event finds the Spendgate request it
settles. A call without a ticket was never admitted by Spendgate (a denial, an auth failure,
a refusal while Spendgate was down): its event records nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ...client import Principal

__all__ = ["TICKET_KEY", "Attribution", "Identity", "Ticket", "new_request_id", "attribution_of", "ticket_of"]

#: The metadata key the ticket is kept under.
TICKET_KEY = "spendgate"

_MAX_CALL_ID = 200


def new_request_id(call_id: object) -> str:
    """A Spendgate request id for one LiteLLM call: LiteLLM's call id (for finding the call in
    LiteLLM's logs) plus a fresh uuid4 — a client may set the call id itself with
    `x-litellm-call-id`, even to the same value twice, and two calls must never share a request
    id (the second would get the first one's decision and record)."""
    shown = str(call_id or "none")[:_MAX_CALL_ID]
    return f"litellm:{shown}:{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Identity:
    """Who pays: a Spendgate key secret, or the principal LiteLLM resolved from its own key."""

    api_key: str | None = None
    principal: Mapping[str, str | None] | None = None

    def fields(self) -> dict[str, Any]:
        """The identity fields of an authorize (or of a record with no authorize before it)."""
        if self.api_key is not None:
            return {"api_key": self.api_key}
        given = self.principal or {}
        return {"principal": Principal(
            key=str(given.get("key") or ""), user=given.get("user"), team=given.get("team"), org=given.get("org"),
        )}


@dataclass(frozen=True)
class Attribution:
    model: str | None
    end_user: str | None
    tags: tuple[str, ...] = ()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def attribution_of(data: Mapping[str, Any], *, end_user_id: str | None) -> Attribution:
    """Model, end user and tags of a request body as LiteLLM parsed it: the end user LiteLLM
    resolved (`user_api_key_dict.end_user_id`) or the body's `user`; tags from `metadata.tags`."""
    metadata = data.get("metadata")
    raw_tags: object = metadata.get("tags") if isinstance(metadata, Mapping) else None
    tags: Sequence[object] = raw_tags if isinstance(raw_tags, (list, tuple)) else ()
    return Attribution(
        model=_text(data.get("model")),
        end_user=end_user_id or _text(data.get("user")),
        tags=tuple(dict.fromkeys(tag for tag in tags if isinstance(tag, str) and tag)),
    )


@dataclass(frozen=True)
class Ticket:
    """A call Spendgate admitted. `authorized` is false for a call let through unauthorized while
    Spendgate was unreachable (SPENDGATE_FAIL_OPEN): its record then carries the identity and
    attribution itself. `key_hash` finds the key secret again in that case (the secret itself is
    never put in metadata, which other loggers may store). `priced_by` "spendgate": authorize sent
    token usage and Spendgate priced it, so the record sends the real usage too."""

    request_id: str
    authorized: bool
    attribution: Attribution
    key_hash: str | None = None
    principal: Mapping[str, str | None] | None = field(default=None)
    priced_by: Literal["spendgate", "litellm"] = "litellm"

    def to_metadata(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "authorized": self.authorized, "model": self.attribution.model,
            "end_user": self.attribution.end_user, "tags": list(self.attribution.tags),
            "key_hash": self.key_hash, "principal": dict(self.principal) if self.principal else None,
            "priced_by": self.priced_by,
        }

    @classmethod
    def from_metadata(cls, value: object) -> Ticket | None:
        if not isinstance(value, Mapping) or not isinstance(value.get("request_id"), str):
            return None
        principal = value.get("principal")
        return cls(
            request_id=value["request_id"],
            authorized=bool(value.get("authorized")),
            attribution=Attribution(
                model=_text(value.get("model")), end_user=_text(value.get("end_user")),
                tags=tuple(tag for tag in value.get("tags") or () if isinstance(tag, str)),
            ),
            key_hash=_text(value.get("key_hash")),
            principal=dict(principal) if isinstance(principal, Mapping) else None,
            priced_by="spendgate" if value.get("priced_by") == "spendgate" else "litellm",
        )


def ticket_of(litellm_params: object) -> Ticket | None:
    """The ticket of an event's call, from `kwargs["litellm_params"]` (its `metadata`, or
    `litellm_metadata` for the call types that keep it there)."""
    if not isinstance(litellm_params, Mapping):
        return None
    for name in ("metadata", "litellm_metadata"):
        metadata = litellm_params.get(name)
        if isinstance(metadata, Mapping) and TICKET_KEY in metadata:
            return Ticket.from_metadata(metadata[TICKET_KEY])
    return None
