"""A client for Spendgate's decision routes, for gateways (sync and asyncio).

    from spendgate.client import SpendgateClient, BudgetDenied

    with SpendgateClient("http://spendgate:8080", gateway_token) as spendgate:
        with spendgate.guard(api_key=key, model="gpt-4o", estimated_cost=Decimal("0.02")) as g:
            response = call_the_model()
            g.cost = cost_of(response)

`guard()` authorizes on entry (raising `BudgetDenied`, whose `status` is what to answer the
caller with), records success with `g.cost` on exit and a failure when the block raises.
`authorize()` / `record()` are the two routes one by one. Calls that fail in a way a retry can
fix are retried with the same request id; both routes are idempotent, so nothing is charged
twice. See docs/client.md.
"""

from .aio import AsyncSpendgateClient
from .denials import DEFAULT_DENIAL_STATUS, DENIAL_STATUS, denial_status
from .errors import (
    BudgetDenied,
    CostNotSet,
    SpendgateClientError,
    SpendgateRejected,
    SpendgateServerError,
    SpendgateUnavailable,
)
from .guard import Guard
from .models import (
    Alert,
    Authorization,
    Charge,
    Entity,
    Money,
    Principal,
    Reason,
    RecordedCharge,
    RecordResult,
    Reservation,
)
from .protocol import DEFAULT_TIMEOUT, RetryEvent, RetryHook, RetryPolicy, Retryable
from .sync import SpendgateClient

__all__ = [
    "SpendgateClient",
    "AsyncSpendgateClient",
    "Guard",
    "Authorization",
    "RecordResult",
    "Reason",
    "Charge",
    "RecordedCharge",
    "Alert",
    "Reservation",
    "Entity",
    "Money",
    "Principal",
    "SpendgateClientError",
    "SpendgateUnavailable",
    "SpendgateRejected",
    "SpendgateServerError",
    "BudgetDenied",
    "CostNotSet",
    "DENIAL_STATUS",
    "DEFAULT_DENIAL_STATUS",
    "denial_status",
    "RetryPolicy",
    "RetryEvent",
    "RetryHook",
    "Retryable",
    "DEFAULT_TIMEOUT",
]
