"""authorize and record as the routes call them: measured per stage, counted, and logged.

`authorize`/`record` stay free of instrumentation. Their ports are handed over behind thin
timing proxies (facts, policy, counters, database), made once per runtime; each call sums its
stages' time into a dict of its own (a context variable: every request runs in its own task), so
a stage is summed over the whole call — authorize may evaluate more than once — and observed
once per call.

The decision log is one JSON line per decision on the logger `spendgate.decisions`
(INFO): decision id, request id, phase, decision, policy revision, charges, reasons, alert
codes, amounts and latency. It never holds the api_key secret or its hash: entries are built
from the response body and the request's amounts only, never from the request itself. With
the setting `decision_log` off, or the logger not enabled for INFO, nothing is built; when on,
a decision costs one `orjson.dumps`; `spendgate serve` writes the lines from a thread of its own
(log_writer.py), handed to it without a LogRecord while that thread is the logger's only way out.
"""

from __future__ import annotations

import inspect
import logging
from contextvars import ContextVar
from time import perf_counter
from typing import Any, NamedTuple, cast

import orjson

from ..alerts.events import refusal_drafts
from ..counters import Counters
from ..decision_store import new_decision_id, row_from_answer
from ..errors import RecordConflict, SpendgateError
from ..facts import FactsCache
from ..ledger_store import LedgerStore
from ..log_writer import sole_writer
from ..money import format_nanos
from ..policy import PolicyEngine
from ..runtime import Runtime
from .authorize import authorize
from .models import AuthorizeRequest, RecordRequest
from .record import record

__all__ = ["observed_authorize", "observed_record", "DECISION_LOGGER"]

DECISION_LOGGER = "spendgate.decisions"
decision_log = logging.getLogger(DECISION_LOGGER)


#: The stage timings of the authorize or record call running in this task.
_STAGE_TIMINGS: ContextVar[dict[str, float]] = ContextVar("spendgate_stage_timings")


class _Timed:
    """`target` with the time of every awaited method added to the running call's `timings[stage]`."""

    __slots__ = ("_target", "_stage", "_methods")

    def __init__(self, target: Any, stage: str) -> None:
        self._target = target
        self._stage = stage
        self._methods: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        made = self._methods.get(name)
        if made is not None:
            return made
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        stage = self._stage

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                timings = _STAGE_TIMINGS.get(None)
                if timings is not None:
                    timings[stage] = timings.get(stage, 0.0) + perf_counter() - start

        self._methods[name] = timed
        return timed


class _TimedPorts(NamedTuple):
    facts: FactsCache
    counters: Counters
    policy: PolicyEngine
    ledgers: LedgerStore


def _ports(runtime: Runtime) -> _TimedPorts:
    """The runtime's ports behind timing proxies, made once per runtime (its ports never change)."""
    if runtime.timed_ports is None:
        runtime.timed_ports = _TimedPorts(
            cast(FactsCache, _Timed(runtime.facts, "facts")),
            cast(Counters, _Timed(runtime.counters, "counters")),
            cast(PolicyEngine, _Timed(runtime.policy, "policy")),
            cast(LedgerStore, _Timed(runtime.ledgers, "database")),
        )
    return cast(_TimedPorts, runtime.timed_ports)


def _charges(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": c["entity"]["type"], "id": c["entity"]["id"], "window": c["window"]} for c in body["charges"]]


def _emit(entry: dict[str, Any]) -> None:
    if "decision_id" not in entry:
        entry = {"decision_id": new_decision_id(), **entry}
    line = orjson.dumps(entry, default=str).decode()
    writer = sole_writer(decision_log)  # `spendgate serve`'s writer thread: the line, without a LogRecord
    if writer is not None:
        writer.write_info(DECISION_LOGGER, line)
    else:
        decision_log.info(line)


def _logging(runtime: Runtime) -> bool:
    return runtime.settings.decision_log and decision_log.isEnabledFor(logging.INFO)


async def observed_authorize(*, runtime: Runtime, request: AuthorizeRequest) -> dict[str, Any]:
    """`authorize` with stage timings, decision counts and a decision-log line."""
    metrics = runtime.metrics
    ports = _ports(runtime)
    timings: dict[str, float] = {}
    _STAGE_TIMINGS.set(timings)  # this task's own: each request runs in a task of its own
    start = perf_counter()
    try:
        answer = await authorize(
            request=request,
            facts_cache=ports.facts,
            counters=ports.counters,
            policy=ports.policy,
            ttl_seconds=runtime.settings.reservation_ttl,
            clock=runtime.clock,
            figures_max_age=runtime.settings.figures_max_age_seconds,
        )
    except SpendgateError as exc:
        metrics.decision_errors.labels("authorize", exc.code).inc()
        raise
    elapsed = perf_counter() - start
    timings["total"] = elapsed
    metrics.observe_stages("authorize", timings)
    body = answer.body
    if answer.replayed:
        metrics.authorize_replays.inc()
        return body
    metrics.count_decision("authorize", body["decision"])
    if body["reasons"]:
        metrics.count_reasons(body["reasons"])
    decision_id = new_decision_id()  # the same in the decision store and the log
    if runtime.background is not None and (body["decision"] == "deny" or body["alerts"]):
        # Off the decision path: queued here, written by the background writer (decision_store/writer.py).
        now = runtime.clock()
        runtime.background.offer(row_from_answer(body, at=now, decision_id=decision_id), refusal_drafts(body, now))
    if _logging(runtime):
        _emit({
            "decision_id": decision_id,
            "request_id": body["request_id"],
            "phase": "authorize",
            "decision": body["decision"],
            "policy_revision": body.get("policy_revision"),
            "key_id": body.get("key_id"),
            "model": body.get("model"),
            "charges": _charges(body),
            "reasons": [{"code": r.get("code"), "entity": r.get("entity")} for r in body["reasons"]],
            "alerts": [a.get("code") for a in body["alerts"]],
            "estimated_cost": None if request.estimated_cost is None else format_nanos(request.estimated_cost),
            "latency_ms": round(elapsed * 1000, 3),
        })
    return body


async def observed_record(*, runtime: Runtime, request: RecordRequest) -> dict[str, Any]:
    """`record` with stage timings, record/duplicate/conflict counts and a decision-log line."""
    metrics = runtime.metrics
    ports = _ports(runtime)
    timings: dict[str, float] = {}
    _STAGE_TIMINGS.set(timings)
    start = perf_counter()
    try:
        body = await record(
            request=request,
            facts_cache=ports.facts,
            counters=ports.counters,
            policy=ports.policy,
            ledger_store=ports.ledgers,
            clock=runtime.clock,
        )
    except RecordConflict:
        metrics.record_conflicts.inc()
        metrics.count_decision("record", "conflict")
        if _logging(runtime):
            _emit({
                "request_id": request.request_id,
                "phase": "record",
                "decision": "conflict",
                "outcome": request.outcome,
                "cost": None if request.cost is None else format_nanos(request.cost),
                "reasons": [{"code": "conflict", "entity": None}],
                "latency_ms": round((perf_counter() - start) * 1000, 3),
            })
        raise
    except SpendgateError as exc:
        metrics.decision_errors.labels("record", exc.code).inc()
        raise
    elapsed = perf_counter() - start
    timings["total"] = elapsed
    metrics.observe_stages("record", timings)
    decision = "duplicate" if body["duplicate"] else "recorded"
    metrics.count_decision("record", decision)
    if body["duplicate"]:
        metrics.record_duplicates.inc()
    else:
        metrics.count_record(body["outcome"])
        if body.get("after_denial"):
            metrics.records_after_denial.inc()
    if _logging(runtime):
        _emit({
            "request_id": body["request_id"],
            "phase": "record",
            "decision": decision,
            "policy_revision": body.get("policy_revision"),
            "outcome": body["outcome"],
            "cost": body["cost"],
            "charges": _charges(body),
            "reasons": [],
            "latency_ms": round(elapsed * 1000, 3),
        })
    return body
