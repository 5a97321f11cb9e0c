"""Spendgate's exception tree and the one JSON error shape every non-2xx response uses.

    SpendgateError                   500 internal_error (never shows internals)
    ├── Unauthorized                 401 unauthorized
    ├── Forbidden                    403 forbidden         (a console change without a valid session / CSRF token)
    ├── InvalidRequest               422 invalid_request   (names the field)
    ├── UnknownPrice                 422 unknown_price     (usage for a model the price table lacks)
    ├── NotFound                     404 not_found
    ├── MethodNotAllowed             405 method_not_allowed (the route exists, not with this method)
    ├── Conflict                     409 conflict
    │   └── RecordConflict           409 conflict          (same request_id, other cost/outcome)
    ├── PayloadTooLarge              413 payload_too_large (a body over SPENDGATE_MAX_BODY_BYTES)
    ├── Unavailable                  503 unavailable       (names the dependency)
    └── PolicyError                  500 policy_error      (a policy that fails to load or evaluate)
        └── PolicyTestsFailed        500 policy_error      (SPENDGATE_POLICY_GATE=test refused a set)

Exceptions take structured arguments and format their own message; third-party errors are
wrapped where they cross into Spendgate (`raise Unavailable("redis") from exc`).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "SpendgateError",
    "Unauthorized",
    "Forbidden",
    "InvalidRequest",
    "UnknownPrice",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "RecordConflict",
    "PayloadTooLarge",
    "Unavailable",
    "PolicyError",
    "PolicyTestsFailed",
    "error_body",
]


class SpendgateError(Exception):
    """Base of every error Spendgate raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


class Unauthorized(SpendgateError):
    status = 401
    code = "unauthorized"

    def __init__(self, *, route_kind: str) -> None:
        super().__init__(
            f"missing or wrong bearer token: {route_kind} routes need "
            f"'Authorization: Bearer $SPENDGATE_{route_kind.upper()}_TOKEN'"
        )


class Forbidden(SpendgateError):
    status = 403
    code = "forbidden"

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"{reason}; reload the console page (sign in again if asked) and retry")


class InvalidRequest(SpendgateError):
    status = 422
    code = "invalid_request"

    def __init__(self, *, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class UnknownPrice(SpendgateError):
    """Usage sent without an explicit cost for a model the price table (policy data) has no price for."""

    status = 422
    code = "unknown_price"

    def __init__(self, *, model: str | None, reason: str, cost_field: str) -> None:
        super().__init__(
            f"{reason}. Send {cost_field} explicitly, or add the model to the price table "
            "(policies/spendgate/pricing/data.json; `spendgate prices refresh --model NAME` copies LiteLLM's price)"
        )
        self.model = model


class NotFound(SpendgateError):
    status = 404
    code = "not_found"

    def __init__(self, *, kind: str, id: str, hint: str = "") -> None:
        super().__init__(f"{kind} {id!r} does not exist" + (f"; {hint}" if hint else ""))
        self.kind = kind
        self.id = id


class MethodNotAllowed(SpendgateError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, *, method: str, path: str) -> None:
        super().__init__(
            f"{path} does not take {method}; see docs/api.md (or GET /docs) for the methods each route accepts"
        )


class Conflict(SpendgateError):
    status = 409
    code = "conflict"


class RecordConflict(Conflict):
    def __init__(self, *, request_id: str, recorded: str, attempted: str) -> None:
        super().__init__(
            f"request {request_id!r} was already recorded as {recorded}; this record says {attempted}. "
            "Use a new request_id for a new request."
        )


class PayloadTooLarge(SpendgateError):
    status = 413
    code = "payload_too_large"

    def __init__(self, *, limit: int) -> None:
        super().__init__(
            f"the request body is larger than {limit} bytes; send a smaller body "
            "(the limit is set by SPENDGATE_MAX_BODY_BYTES)"
        )
        self.limit = limit


class Unavailable(SpendgateError):
    status = 503
    code = "unavailable"

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(
            f"{dependency} is unavailable" + (f" ({detail})" if detail else "") + "; retry shortly"
        )
        self.dependency = dependency


class PolicyError(SpendgateError):
    status = 500
    code = "policy_error"


class PolicyTestsFailed(PolicyError):
    """The policy tests beside a policy set fail, so the set may not go live (SPENDGATE_POLICY_GATE=test)."""

    def __init__(self, *, revision: str, failing: tuple[str, ...], problem: str = "") -> None:
        what = problem or (
            f"{len(failing)} policy test(s) fail: {', '.join(failing[:5])}" + (" …" if len(failing) > 5 else "")
        )
        super().__init__(
            f"policies {revision} refused by SPENDGATE_POLICY_GATE=test: {what}; "
            "run `spendgate policy test -v` to see why"
        )
        self.revision = revision
        self.failing = failing


def error_body(code: str, message: str) -> dict[str, Any]:
    """The single error shape of API.md."""
    return {"error": {"code": code, "message": message}}
