"""Shutdown stops a background task even when it swallowed its first cancellation (stopping.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from spendgate.stopping import cancel_and_wait


async def test_a_task_that_carried_on_after_its_cancellation_is_cancelled_again_until_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = 0

    async def sweeper() -> None:  # as the sweeper behaved when a Redis write lost its cancellation
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1

    quiet = asyncio.create_task(asyncio.sleep(3600), name="quiet")
    stubborn = asyncio.create_task(sweeper(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="spendgate"):
        await asyncio.wait_for(cancel_and_wait([quiet, stubborn], patience=0.1), 30)
    assert quiet.cancelled() and stubborn.cancelled() and swallowed == 2
    assert [r.message for r in caplog.records] == [
        "background task stubborn still running 0.1 s after it was cancelled; cancelling it again"
    ] * 2


async def test_a_task_that_had_failed_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("the sweeper broke")

    task = asyncio.create_task(broken(), name="broken")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="spendgate"):
        await cancel_and_wait([task])
    assert [(r.message, str(r.exc_info[1]) if r.exc_info else None) for r in caplog.records] == [
        ("background task broken had failed", "the sweeper broke")
    ]
