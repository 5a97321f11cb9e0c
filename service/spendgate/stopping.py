"""Stopping background tasks at shutdown, even one that lost a cancellation.

A task can swallow its cancellation: on Python 3.11 `asyncio.wait_for` returns normally when the
caller is cancelled just as the awaited work finishes (redis-py's writes did; counters/
redis_connection.py). A loop such as the reservation sweeper then goes round again, and a shutdown
that cancelled it once and awaited it would wait for ever. Cancelling again until it ends costs nothing
when the first cancellation lands."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

__all__ = ["cancel_and_wait"]

log = logging.getLogger("spendgate")

#: Seconds between cancellations of a task that has not ended.
RETRY_SECONDS = 1.0


async def cancel_and_wait(tasks: Collection[asyncio.Task[None]]) -> None:
    """Cancel each task and wait until every one has ended, cancelling again any that carried on."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY_SECONDS)
        for task in pending:
            log.warning("background task %s carried on after it was cancelled; cancelling it again", task.get_name())
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s had failed", task.get_name(), exc_info=task.exception())
