"""Which HTTP status a gateway answers its caller with when Spendgate denies a request.

The one mapping from deny reason codes (API.md, "Decision routes") to statuses; the guard
and the LiteLLM integration both use it:

    budget_exceeded                  402 Payment Required
    invalid_key, key_expired         401 Unauthorized
    key_blocked, model_not_allowed   403 Forbidden
    (any other code)                 403 Forbidden

With several reasons, the most fundamental wins: a bad key (401) before a forbidden one (403)
before an exhausted budget (402) — fixing the budget would not help a caller whose key is dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

__all__ = ["DENIAL_STATUS", "DEFAULT_DENIAL_STATUS", "denial_status"]

#: Deny reason code (every one of `spendgate.vocabulary.DENY_CODES`) → HTTP status for the gateway's caller.
DENIAL_STATUS: Mapping[str, int] = MappingProxyType({
    "invalid_key": 401,
    "key_expired": 401,
    "key_blocked": 403,
    "model_not_allowed": 403,
    "budget_exceeded": 402,
})

#: For a code this client does not know (a custom policy's): refused, not a payment matter.
DEFAULT_DENIAL_STATUS = 403

_PRECEDENCE = (401, 403, 402)


def denial_status(codes: Iterable[str]) -> int:
    """The status for a denial with these reason codes (403 when there are none)."""
    statuses = {DENIAL_STATUS.get(code, DEFAULT_DENIAL_STATUS) for code in codes}
    return next((status for status in _PRECEDENCE if status in statuses), DEFAULT_DENIAL_STATUS)
