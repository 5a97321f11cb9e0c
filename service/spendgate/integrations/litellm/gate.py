"""Admit and settle LiteLLM calls through Spendgate: the integration's logic, without litellm itself.

`admit()` runs in the pre-call hook: one authorize; a denial becomes the status of
`spendgate.client.denial_status` (402 budget, 401 key, 403 blocked or model) with Spendgate's
reasons in the body. When Spendgate cannot answer, the call is refused with 503 — or, with
SPENDGATE_FAIL_OPEN, let through and recorded afterwards as a record with no authorize. Nothing
here lets an exception other than `HTTPException` out of the hook: LiteLLM would answer 500.

`settle()` runs in LiteLLM's success and failure events: exactly one record per admitted call,
with the call's real usage priced by Spendgate (SPENDGATE_LITELLM_PRICING=spendgate) or its real
cost by LiteLLM (`standard_logging_object.response_cost`). Record is idempotent per
request id, so even an event fired twice charges once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from fastapi import HTTPException

from ...client import AsyncSpendgateClient, Authorization, SpendgateClientError, SpendgateRejected, denial_status
from .calls import Attribution, Identity, Ticket, new_request_id
from .settings import LiteLLMSettings

__all__ = ["Gate", "denial_exception", "unavailable_exception"]

log = logging.getLogger("spendgate.integrations.litellm")


def denial_exception(authorization: Authorization) -> HTTPException:
    """The client's answer to a denial: the deny-status table's status, Spendgate's reasons in the body."""
    reasons = authorization.reasons
    status = denial_status(reason.code for reason in reasons)
    first = next((r for r in reasons if denial_status([r.code]) == status), reasons[0] if reasons else None)
    message = "; ".join(reason.message for reason in reasons) or "refused by Spendgate's policy"
    return HTTPException(status_code=status, detail={"error": {
        "code": first.code if first else "denied",
        "message": f"Spendgate refused this request: {message}",
        "request_id": authorization.request_id,
        "reasons": [
            {"code": r.code, "message": r.message, "entity": {"type": r.entity.type, "id": r.entity.id}
             if r.entity else None}
            for r in reasons
        ],
    }})


def unavailable_exception(reason: str) -> HTTPException:
    return HTTPException(status_code=503, detail={"error": {
        "code": "spendgate_unavailable",
        "message": f"The budget service could not decide on this request ({reason}); retry shortly.",
    }})


class Gate:
    """One per LiteLLM process: the Spendgate client (one connection pool) and the fail mode."""

    def __init__(self, settings: LiteLLMSettings, client: AsyncSpendgateClient | None = None) -> None:
        self.settings = settings
        self.client = client or AsyncSpendgateClient(
            settings.url, settings.gateway_token.get_secret_value(), timeout=settings.timeout,
            retries=settings.retries,
        )

    async def admit(
        self, *, identity: Identity, attribution: Attribution, estimate: Decimal | None, call_id: object,
        key_hash: str | None = None, usage: Mapping[str, int] | None = None,
    ) -> Ticket:
        """Authorize one call; returns its ticket or raises the `HTTPException` to answer with.

        With `usage` (SPENDGATE_LITELLM_PRICING=spendgate) Spendgate prices the estimate; a model its
        price table lacks (422 `unknown_price`) is authorized again, under a new request id, with
        LiteLLM's `estimate` — the caller never sees that refusal."""
        if usage is not None:
            try:
                return await self._authorize(identity, attribution, None, usage, call_id, key_hash)
            except _UnknownPrice as unpriced:
                log.info("model %s has no price in Spendgate's table (%s); using LiteLLM's estimate",
                         attribution.model, unpriced.message)
        return await self._authorize(identity, attribution, estimate, None, call_id, key_hash)

    async def _authorize(
        self, identity: Identity, attribution: Attribution, estimate: Decimal | None,
        usage: Mapping[str, int] | None, call_id: object, key_hash: str | None,
    ) -> Ticket:
        request_id = new_request_id(call_id)
        priced_by: Literal["spendgate", "litellm"] = "spendgate" if usage is not None else "litellm"
        try:
            authorization = await self.client.authorize(
                **identity.fields(), model=attribution.model, end_user=attribution.end_user,
                tags=attribution.tags, estimated_cost=estimate, request_id=request_id, usage=usage,
            )
        except SpendgateRejected as exc:
            if exc.status == 422 and exc.code == "unknown_price" and usage is not None:
                raise _UnknownPrice(exc.server_message) from exc
            if exc.status in (413, 422):  # the caller's request: too large, or a field Spendgate refuses
                message = f"Spendgate refused this request's fields: {exc.server_message}"
                raise HTTPException(status_code=400 if exc.status == 422 else 413,
                                    detail={"error": {"code": exc.code, "message": message}}) from exc
            # Spendgate answered and refused (e.g. 401: a wrong gateway token). That is no outage, so
            # SPENDGATE_FAIL_OPEN must not let the call through.
            log.error("request %s refused with 503: Spendgate answered %s %s", request_id, exc.status, exc.code)
            raise unavailable_exception(f"Spendgate refused the call ({exc.code})") from exc
        except Exception as exc:  # noqa: BLE001 — unreachable, or anything else: LiteLLM would answer 500
            return self._unreachable(exc, request_id, identity, attribution, key_hash, priced_by)
        if not authorization.allowed:
            raise denial_exception(authorization)
        return Ticket(request_id, True, attribution, key_hash=key_hash, principal=identity.principal,
                      priced_by=priced_by)

    def _unreachable(
        self, exc: Exception, request_id: str, identity: Identity, attribution: Attribution, key_hash: str | None,
        priced_by: Literal["spendgate", "litellm"],
    ) -> Ticket:
        reason = exc.message if isinstance(exc, SpendgateClientError) else f"{type(exc).__name__}: {exc}"
        if not self.settings.fail_open:
            log.warning("request %s refused with 503: %s (SPENDGATE_FAIL_OPEN=true lets calls through instead)",
                        request_id, reason)
            raise unavailable_exception("Spendgate did not answer") from exc
        log.warning("request %s let through unauthorized (SPENDGATE_FAIL_OPEN): %s", request_id, reason)
        return Ticket(request_id, False, attribution, key_hash=key_hash, principal=identity.principal,
                      priced_by=priced_by)

    async def settle(
        self, ticket: Ticket, *, cost: Decimal, outcome: Literal["success", "failure"], identity: Identity | None,
        usage: Mapping[str, int] | None = None,
    ) -> None:
        """Record the call once: its `usage` priced by Spendgate when the ticket was priced so and
        LiteLLM logged usage, else LiteLLM's `cost` (also when Spendgate cannot price it: any 422,
        e.g. `unknown_price`). A call let through unauthorized is recorded with its identity
        (`identity`; None when it is no longer known — then nothing can be charged)."""
        extra: dict[str, Any] = {}
        if not ticket.authorized:
            if identity is None:
                log.error("request %s: cost %s not recorded: its key is no longer known to this process",
                          ticket.request_id, cost)
                return
            attribution = ticket.attribution
            extra = identity.fields() | {"model": attribution.model, "end_user": attribution.end_user,
                                         "tags": attribution.tags}
        try:
            if usage is not None and ticket.priced_by == "spendgate":
                try:
                    await self.client.record(ticket.request_id, usage=usage, outcome=outcome, **extra)
                    return
                except SpendgateRejected as exc:
                    if exc.status != 422:  # unknown_price, or usage Spendgate cannot price: LiteLLM's cost
                        raise
                    log.info("request %s: Spendgate cannot price its usage (%s); recording LiteLLM's cost %s",
                             ticket.request_id, exc.server_message, cost)
            await self.client.record(ticket.request_id, cost=cost, outcome=outcome, **extra)
        except SpendgateClientError as exc:
            log.error("request %s: recording %s (%s) failed: %s; its reservation expires on its own",
                      ticket.request_id, cost, outcome, exc.message)


class _UnknownPrice(Exception):
    """Spendgate's price table has no price for the model (422 unknown_price): price with LiteLLM's cost."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
