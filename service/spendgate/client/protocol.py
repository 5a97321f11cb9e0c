"""What the sync and async clients share, without I/O: request bodies, the retry rule and the
reading of an answer into a result or an exception.

Retrying is safe because both decision routes are idempotent per `request_id` (API.md): a
retried authorize returns the first decision and reserves nothing more; a retried record
answers `"duplicate": true` and charges nothing. So the client retries — always with the
same body, hence the same request id — on what may succeed next time: no connection, a
dropped connection, a timeout, and 502/503/504 (Spendgate's `unavailable`, or a load
balancer with no replica behind it). A 4xx never changes on retry and is raised at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx

from .errors import SpendgateClientError, SpendgateRejected, SpendgateServerError, SpendgateUnavailable
from .models import Money, Principal, to_wire

__all__ = [
    "AUTHORIZE_PATH",
    "DEFAULT_TIMEOUT",
    "http_options",
    "RECORD_PATH",
    "RetryPolicy",
    "RetryEvent",
    "RetryHook",
    "Retryable",
    "authorize_body",
    "record_body",
    "read_answer",
    "read_transport_error",
    "parse",
]

AUTHORIZE_PATH = "/v1/authorize"
RECORD_PATH = "/v1/record"

#: Seconds for each of connect, read, write and pool wait: authorize is on the gateway's hot path
#: (a healthy decision takes milliseconds), so a stuck replica is given up on and retried fast.
DEFAULT_TIMEOUT = 2.0

_RETRY_STATUSES = frozenset({502, 503, 504})
_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first; before retry n (0-based) wait a random time up to
    `backoff * 2**n` seconds, capped at `max_backoff` ("full jitter": replicas that failed
    together do not get their retries back all at once)."""

    retries: int = 2
    backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must not be negative")

    def delay(self, retry: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**retry))


@dataclass(frozen=True)
class Retryable:
    """An attempt that failed in a way a retry may fix."""

    status: int | None
    code: str
    message: str

    def give_up(self, *, attempts: int, route: str) -> SpendgateUnavailable:
        return SpendgateUnavailable(
            status=self.status, code=self.code, message=self.message, attempts=attempts, route=route
        )


@dataclass(frozen=True)
class RetryEvent:
    """Passed to the `on_retry` hook before each retry (for logs and metrics)."""

    route: str
    request_id: str
    retry: int
    delay: float
    failure: Retryable


RetryHook = Callable[[RetryEvent], None]


def http_options(base_url: str, gateway_token: str, timeout: float | httpx.Timeout) -> dict[str, Any]:
    """Keyword arguments for the one httpx client (sync or async) an instance keeps. httpx hides
    the `authorization` header in reprs; the token is stored nowhere else."""
    if not gateway_token:
        raise ValueError("gateway_token is required: the value of SPENDGATE_GATEWAY_TOKEN")
    return {
        "base_url": base_url,
        "headers": {"authorization": f"Bearer {gateway_token}", "user-agent": "spendgate-client"},
        "timeout": timeout,
    }


def authorize_body(
    *, request_id: str, api_key: str | None, model: str | None, estimated_cost: Money | None,
    end_user: str | None, tags: Sequence[str], principal: Principal | None = None,
    usage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """`usage` ({"input_tokens", "max_output_tokens"}): priced by the service when `estimated_cost` is None."""
    if isinstance(tags, str):
        raise TypeError("tags must be a sequence of tag names, not one string")
    if (api_key is None) == (principal is None):
        raise ValueError("pass exactly one of api_key (a Spendgate secret) or principal (your gateway's caller)")
    body: dict[str, Any] = {"request_id": request_id, "tags": list(tags)}
    if principal is not None:
        body["principal"] = principal.to_json()
    else:
        body["api_key"] = api_key
    if model is not None:
        body["model"] = model
    if end_user is not None:
        body["end_user"] = end_user
    if estimated_cost is not None:
        body["estimated_cost"] = to_wire(estimated_cost, field="estimated_cost")
    if usage is not None:
        body["usage"] = dict(usage)
    return body


def record_body(
    *, request_id: str, cost: Money | None, outcome: Literal["success", "failure"], api_key: str | None,
    model: str | None, end_user: str | None, tags: Sequence[str], principal: Principal | None = None,
    usage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A record; `api_key` or `principal`, and attribution, are only needed when no authorize preceded it.
    `usage` ({"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}) is priced by
    the service when `cost` is None; an explicit `cost` wins."""
    if outcome not in ("success", "failure"):
        raise ValueError(f"outcome must be 'success' or 'failure', not {outcome!r}")
    if cost is None and usage is None:
        raise ValueError("pass cost (what the call cost) or usage (its token counts, priced by the service)")
    body: dict[str, Any] = {"request_id": request_id, "outcome": outcome}
    if cost is not None:
        body["cost"] = to_wire(cost, field="cost")
    if usage is not None:
        body["usage"] = dict(usage)
    if api_key is not None or principal is not None:
        body |= authorize_body(
            request_id=request_id, api_key=api_key, model=model, estimated_cost=None, end_user=end_user, tags=tags,
            principal=principal,
        )
    return body


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The server's `{"error": {"code", "message"}}`, or a stand-in for a body without one
    (a proxy's HTML error page, say)."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().replace("\n", " ")[:200]
        return f"http_{response.status_code}", text or response.reason_phrase


def read_answer(response: httpx.Response, *, route: str) -> dict[str, Any] | Retryable:
    """The JSON body of a 200, a `Retryable` for 502/503/504; raises for everything else."""
    status = response.status_code
    if status == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise SpendgateServerError(status=status, code="invalid_response", message="the body is not a JSON object",
                                       route=route)
        return body
    code, message = _error_of(response)
    if status in _RETRY_STATUSES:
        return Retryable(status, code, message)
    if 400 <= status < 500:
        raise SpendgateRejected(status=status, code=code, message=message, route=route)
    raise SpendgateServerError(status=status, code=code, message=message, route=route)


def read_transport_error(exc: httpx.TransportError) -> Retryable:
    """A failure with no HTTP answer; raises for the ones a retry cannot fix (a bad URL, say)."""
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return Retryable(None, type(exc).__name__, str(exc) or type(exc).__name__)
    raise SpendgateClientError(f"cannot call Spendgate: {type(exc).__name__}: {exc}; check base_url") from exc


def parse(build: Callable[[dict[str, Any]], _T], body: dict[str, Any], *, route: str) -> _T:
    """Build a result from a 200 body; a body that is not the API's shape is a server error."""
    try:
        return build(body)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise SpendgateServerError(
            status=200, code="invalid_response", message=f"unexpected {route} answer: {exc!r}", route=route
        ) from exc
