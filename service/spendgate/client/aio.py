"""`AsyncSpendgateClient`: the decision routes for an asyncio gateway, over one pooled httpx.AsyncClient.

The same calls as `sync.SpendgateClient` (kept line for line alike), awaited."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Literal

import httpx

from .errors import BudgetDenied, CostNotSet, SpendgateClientError
from .guard import Guard, closing_record
from .models import Authorization, Money, Principal, RecordResult
from .protocol import (
    AUTHORIZE_PATH,
    DEFAULT_TIMEOUT,
    RECORD_PATH,
    RetryEvent,
    RetryHook,
    RetryPolicy,
    Retryable,
    authorize_body,
    http_options,
    parse,
    read_answer,
    read_transport_error,
    record_body,
)

__all__ = ["AsyncSpendgateClient"]

log = logging.getLogger("spendgate.client")


class AsyncSpendgateClient:
    """Calls `POST /v1/authorize` and `POST /v1/record`, retrying safely (see `protocol`).

    One instance holds one connection pool: create it once per process and `aclose()` it (or use
    it as an async context manager). The gateway token is sent as a bearer header and never shown.
    """

    def __init__(
        self,
        base_url: str,
        gateway_token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._on_retry = on_retry
        self._http = httpx.AsyncClient(**http_options(self.base_url, gateway_token, timeout))

    def __repr__(self) -> str:
        return f"AsyncSpendgateClient(base_url={self.base_url!r}, retries={self.retry.retries})"

    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncSpendgateClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the routes ---------------------------------------------------------------------

    async def authorize(
        self,
        *,
        api_key: str | None = None,
        principal: Principal | None = None,
        model: str | None = None,
        estimated_cost: Money | None = None,
        end_user: str | None = None,
        tags: Sequence[str] = (),
        request_id: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> Authorization:
        """Ask whether a model call may go ahead (a new uuid4 request id unless one is given).
        A denial is an `Authorization` with `allowed` false, not an exception. The caller is `api_key`
        or, for a gateway that authenticates its own keys, `principal` (exactly one)."""
        body = authorize_body(
            request_id=request_id or str(uuid.uuid4()), api_key=api_key, model=model,
            estimated_cost=estimated_cost, end_user=end_user, tags=tags, principal=principal, usage=usage,
        )
        return parse(Authorization.from_json, await self._post(AUTHORIZE_PATH, body), route=AUTHORIZE_PATH)

    async def record(
        self,
        request_id: str,
        *,
        cost: Money | None = None,
        outcome: Literal["success", "failure"] = "success",
        api_key: str | None = None,
        model: str | None = None,
        end_user: str | None = None,
        tags: Sequence[str] = (),
        principal: Principal | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> RecordResult:
        """Charge what the call cost (`cost`, or `usage` priced by the service) and release its
        reservation. `api_key` or `principal` (and attribution) only for a request never authorized."""
        body = record_body(
            request_id=request_id, cost=cost, outcome=outcome, api_key=api_key, model=model,
            end_user=end_user, tags=tags, principal=principal, usage=usage,
        )
        return parse(RecordResult.from_json, await self._post(RECORD_PATH, body), route=RECORD_PATH)

    @asynccontextmanager
    async def guard(
        self,
        *,
        api_key: str | None = None,
        principal: Principal | None = None,
        model: str | None = None,
        estimated_cost: Money | None = None,
        end_user: str | None = None,
        tags: Sequence[str] = (),
        request_id: str | None = None,
    ) -> AsyncIterator[Guard]:
        """Authorize on entry (raising `BudgetDenied` on a denial), record on exit.

        The block makes the model call and sets `g.cost`. Normal exit records success with that
        cost; an exception records a failure (releasing the reservation) and propagates; a
        block that set no cost is recorded as a failure and raises `CostNotSet`.
        """
        authorization = await self.authorize(
            api_key=api_key, principal=principal, model=model, estimated_cost=estimated_cost, end_user=end_user,
            tags=tags, request_id=request_id,
        )
        if not authorization.allowed:
            raise BudgetDenied(authorization)
        g = Guard(authorization)
        try:
            yield g
        except BaseException:
            cost, outcome = closing_record(g, failed=True)
            try:
                g.record = await self.record(g.request_id, cost=cost, outcome=outcome)
            except SpendgateClientError as exc:  # the block's own error matters more
                log.warning("request %s: recording the failure failed (%s); its reservation expires on its own",
                            g.request_id, exc.message)
            raise
        cost, outcome = closing_record(g, failed=False)
        g.record = await self.record(g.request_id, cost=cost, outcome=outcome)
        if outcome == "failure":
            raise CostNotSet(request_id=g.request_id)

    # --- one call, with retries -----------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        retry = 0
        while True:
            failure: Retryable
            cause: httpx.TransportError | None = None
            try:
                answer = read_answer(await self._http.post(path, json=body), route=path)
            except httpx.TransportError as exc:
                failure, cause = read_transport_error(exc), exc
            else:
                if not isinstance(answer, Retryable):
                    return answer
                failure = answer
            if retry >= self.retry.retries:
                raise failure.give_up(attempts=retry + 1, route=path) from cause
            event = RetryEvent(path, body["request_id"], retry, self.retry.delay(retry), failure)
            log.info("request %s: %s got %s; retry %d in %.2fs", event.request_id, path, failure.code,
                     retry + 1, event.delay)
            if self._on_retry is not None:
                self._on_retry(event)
            await asyncio.sleep(event.delay)
            retry += 1
