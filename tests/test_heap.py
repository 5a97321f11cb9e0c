"""A serving process settles the garbage collector once start-up is done (spendgate/heap.py): what
start-up built is frozen and young passes are spaced out. Without it, full collections every second
or so paused the decision path for tens of ms (bench/README.md, "Fifth round")."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from spendgate.cli import _StartupGuard
from spendgate.heap import OLDER_THRESHOLDS, YOUNG_THRESHOLD


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_a_started_app_has_its_start_up_frozen_and_young_passes_spaced_out(collector_restored: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":  # the state the first request meets
            sent.append({**message, "frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold()})
        else:
            sent.append(message)

    await _StartupGuard(FastAPI())({"type": "lifespan"}, receive, send)

    started = sent[0]
    assert started["type"] == "lifespan.startup.complete"
    assert started["frozen"] > 10_000  # modules, FastAPI, pydantic: everything alive at start-up
    assert started["thresholds"] == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert sent[-1]["type"] == "lifespan.shutdown.complete"
