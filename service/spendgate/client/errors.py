"""The client's exception tree: how a gateway sees Spendgate's answers and failures.

    SpendgateClientError             anything the client raises on purpose
    ├── SpendgateUnavailable         no answer after every retry (connection errors, timeouts, 503)
    ├── SpendgateRejected            401 / 409 / 422 / other 4xx: the request is wrong, never retried
    ├── SpendgateServerError         500 or a 2xx body that is not the API's shape
    ├── BudgetDenied                 authorize answered "deny" (raised by `guard()` only)
    └── CostNotSet                   a `guard()` body finished without setting `cost`

This tree is separate from `spendgate.errors` on purpose: that one turns server failures into
HTTP answers; this one turns HTTP answers back into exceptions on the gateway's side, carrying
the server's `code` and `message` unchanged. No exception here holds the gateway token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .denials import denial_status

if TYPE_CHECKING:
    from .models import Authorization, Reason

__all__ = [
    "SpendgateClientError",
    "SpendgateUnavailable",
    "SpendgateRejected",
    "SpendgateServerError",
    "BudgetDenied",
    "CostNotSet",
]


class SpendgateClientError(Exception):
    """Base of every error the Spendgate client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _ServerAnswer(SpendgateClientError):
    """An error the server (or the network) answered: its HTTP status, error code and message."""

    def __init__(self, *, status: int | None, code: str, message: str, prefix: str) -> None:
        shown = f"HTTP {status} {code}" if status is not None else code
        super().__init__(f"{prefix} ({shown}): {message}")
        self.status = status
        self.code = code
        self.server_message = message


class SpendgateUnavailable(_ServerAnswer):
    """Spendgate did not answer usefully after `attempts` tries. `status` is None when the last
    attempt got no HTTP answer at all (connection refused or dropped, timeout)."""

    def __init__(self, *, status: int | None, code: str, message: str, attempts: int, route: str) -> None:
        super().__init__(
            status=status, code=code, message=message,
            prefix=f"Spendgate {route} failed after {attempts} attempt{'s' if attempts != 1 else ''}",
        )
        self.attempts = attempts
        self.route = route


class SpendgateRejected(_ServerAnswer):
    """Spendgate refused the request itself (bad token, bad field, conflicting record); retrying
    the same request cannot succeed."""

    def __init__(self, *, status: int, code: str, message: str, route: str) -> None:
        super().__init__(status=status, code=code, message=message, prefix=f"Spendgate refused {route}")
        self.route = route


class SpendgateServerError(_ServerAnswer):
    """Spendgate failed internally, or answered something that is not the API's shape."""

    def __init__(self, *, status: int, code: str, message: str, route: str) -> None:
        super().__init__(status=status, code=code, message=message, prefix=f"Spendgate {route} failed")
        self.route = route


class BudgetDenied(SpendgateClientError):
    """Authorize refused the request. `status` is the HTTP status to answer the gateway's caller
    with (see `spendgate.client.denials`); `reasons` are the server's, unchanged."""

    def __init__(self, authorization: Authorization) -> None:
        self.authorization = authorization
        self.reasons: tuple[Reason, ...] = authorization.reasons
        self.request_id = authorization.request_id
        self.status = denial_status(reason.code for reason in authorization.reasons)
        detail = "; ".join(reason.message for reason in self.reasons) or "refused by policy"
        super().__init__(f"request {self.request_id!r} denied: {detail}")


class CostNotSet(SpendgateClientError):
    """The body of `guard()` ended normally without setting `g.cost`; the request was recorded as
    a failure with cost 0 (its reservation released) rather than charged a guessed amount."""

    def __init__(self, *, request_id: str) -> None:
        super().__init__(
            f"request {request_id!r}: set `g.cost` to the call's real cost inside `guard()`; it was "
            "recorded as a failure with cost 0 so its reservation is released"
        )
        self.request_id = request_id
