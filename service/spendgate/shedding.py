"""Load shedding for authorize: past a bound of requests in flight, answer 503 at once.

Why: past its capacity a replica that queues every request collapses — each one waits behind
the rest, gateways time out, and the replica keeps working on requests nobody awaits any more
(bench/README.md measured throughput falling to a fifth of capacity). A fast 503 `unavailable`
instead lets the gateway retry on another replica or refuse cleanly, and keeps the requests
already admitted fast. Only authorize is shed: a record finishes a call that already happened
and holds a reservation; refusing it would only add a retry.
"""

from __future__ import annotations

from types import TracebackType

from prometheus_client import Counter

from .errors import Unavailable

__all__ = ["InFlightLimit"]


class InFlightLimit:
    """At most `limit` authorizes in flight on this replica (0: no limit).

    `with limit.slot():` holds one for the block. The limit is its own context manager (a class, not a
    generator-based one: it is entered on every authorize, and a generator per call cost more than the check).
    """

    def __init__(self, limit: int, shed: Counter) -> None:
        self.limit = limit
        self.in_flight = 0
        self._shed = shed

    def slot(self) -> InFlightLimit:
        return self

    def __enter__(self) -> None:
        if self.limit and self.in_flight >= self.limit:
            self._shed.inc()
            raise Unavailable(
                "this replica", f"{self.in_flight} authorizes already in flight, its SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT"
            )
        self.in_flight += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1
