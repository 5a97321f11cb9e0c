"""Stopping background tasks at shutdown, even one that lost a cancellation.

A task can swallow its cancellation: on Python 3.11 `asyncio.wait_for` returns normally when the
caller is cancelled just as the awaited work finishes (redis-py's writes did; counters/
redis_connection.py). A loop such as the reservation sweeper then goes round again, and a shutdown
that cancelled it once and awaited it would wait for ever. Cancelling again until it ends costs nothing
when the first cancellation lands; the pause before doing so leaves a task time to finish cleaning up
after the first (its database and Redis calls are bounded by a few seconds)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

__all__ = ["cancel_and_wait"]

log = logging.getLogger("spendgate")

#: Seconds to wait for a cancelled task to end before cancelling it again.
PATIENCE_SECONDS = 5.0


async def cancel_and_wait(tasks: Collection[asyncio.Task[None]], *, patience: float = PATIENCE_SECONDS) -> None:
    """Cancel each task and wait until every one has ended, cancelling again any still running after
    `patience` seconds."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)
        for task in pending:
            log.warning(
                "background task %s still running %g s after it was cancelled; cancelling it again",
                task.get_name(), patience,
            )
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s had failed", task.get_name(), exc_info=task.exception())
