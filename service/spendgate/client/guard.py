"""The state a `guard()` block shares with the client: the authorization, and the cost the
block sets once the model call is done."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from .models import Authorization, Money, RecordResult, to_wire

__all__ = ["Guard", "closing_record"]


class Guard:
    """Yielded by `client.guard(...)`. Set `cost` (Decimal, int or decimal string) to the call's
    real cost before the block ends; `record` holds the record's result after it."""

    def __init__(self, authorization: Authorization) -> None:
        self.authorization = authorization
        self.request_id = authorization.request_id
        self._cost: Decimal | None = None
        self.record: RecordResult | None = None

    @property
    def cost(self) -> Decimal | None:
        return self._cost

    @cost.setter
    def cost(self, value: Money | None) -> None:
        self._cost = None if value is None else Decimal(to_wire(value, field="cost"))

    def __repr__(self) -> str:
        return f"Guard(request_id={self.request_id!r}, cost={self._cost!r})"


def closing_record(guard: Guard, *, failed: bool) -> tuple[Decimal, Literal["success", "failure"]]:
    """The (cost, outcome) to record when the block ends: its cost on success; on failure, or when
    no cost was set, a failure — with what it did cost, if it said, so the reservation is released."""
    if failed or guard.cost is None:
        return guard.cost or Decimal(0), "failure"
    return guard.cost, "success"
