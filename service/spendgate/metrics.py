"""Prometheus metrics: every metric object of the service, on one registry per app.

A registry per `Metrics` (not prometheus-client's global one) lets one process hold several
apps — the tests do — without duplicate-registration errors. The `Runtime` owns the instance;
`GET /metrics` renders it.

Labels are bounded sets only (phase, stage, decision, reason code, entity type, outcome,
reconcile problem): never a request id, key id or other per-tenant value. Hot-path
instruments are bound to their labels once, here, so a request pays a dict lookup and an
increment — no label resolution.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .vocabulary import DENY_CODES, ENTITY_TYPES

__all__ = ["Metrics", "CONTENT_TYPE", "PHASES", "STAGES", "RECONCILE_PROBLEMS"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
PHASES = ("authorize", "record")
#: Where a decision spends its time. `total` is the whole service call.
STAGES = ("facts", "policy", "counters", "database", "total")
#: What reconcile can find wrong with a ledger's counter (see spendgate.reconcile).
RECONCILE_PROBLEMS = ("spent", "behind", "ahead", "reserved", "missing")

#: Seconds: 250 µs … 2.5 s, dense where a healthy decision lands (≤ 10 ms).
_LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
_DENY_CODES = DENY_CODES
_ENTITY_TYPES = ENTITY_TYPES


class StageHistogram:
    """`spendgate_stage_seconds`: a histogram per (phase, stage), rendered as prometheus-client's `Histogram`
    renders one (tests/test_stage_histogram.py), observed with a bisect and two additions.

    Every decision observes 4–5 stages. prometheus-client's `Histogram` takes a lock for the sum and one for
    the bucket on each observation: 3.3 µs a decision, 1.9 % of a replica's event loop under load
    (bench/README.md, twelfth round); this takes 1.1 µs. The decision path is its only writer, on the event
    loop's thread; a scrape reads the plain counts (it may see an observation's bucket before its sum, as a
    scrape of the library's histogram may).
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], series: Iterable[tuple[str, str]],
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = list(buckets)
        self._le = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]
        #: Per (phase, stage): each bucket's own count (the last one above every bound), and the sum.
        self._series = {labels: ([0] * len(self._le), [0.0]) for labels in series}
        self._created = time.time()
        registry.register(self)

    def observe(self, phase: str, stage: str, seconds: float) -> None:
        counts, total = self._series[(phase, stage)]
        counts[bisect_left(self._bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        total[0] += seconds

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(self._name, self._documentation, labels=["phase", "stage"])
        for (phase, stage), (counts, total) in self._series.items():
            histogram.add_metric([phase, stage], buckets=list(zip(self._le, accumulate(counts))), sum_value=total[0])
            # One family, as the library's: its `_created` samples are part of the histogram's.
            histogram.samples.append(Sample(f"{self._name}_created", {"phase": phase, "stage": stage}, self._created))
        yield histogram


class Metrics:
    """All of Spendgate's metrics, registered on `self.registry`."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)  # memory, CPU, open fds of this replica

        self.decisions = Counter(
            "spendgate_decisions", "Decisions taken, by phase and decision (authorize: allow|deny; "
            "record: recorded|duplicate|conflict).", ["phase", "decision"], registry=r,
        )
        self.deny_reasons = Counter(
            "spendgate_deny_reasons", "Reasons given by refused authorizations, by reason code and entity type.",
            ["code", "entity_type"], registry=r,
        )
        self.authorize_shed = Counter(
            "spendgate_authorize_shed", "Authorizations refused with 503 at once because the replica already had "
            "SPENDGATE_MAX_AUTHORIZE_IN_FLIGHT in flight.", registry=r,
        )
        self.authorize_replays = Counter(
            "spendgate_authorize_replays", "Repeated authorizations answered with the stored first decision.",
            registry=r,
        )
        self.decision_errors = Counter(
            "spendgate_decision_errors", "Decision calls that ended in an error, by phase and error code.",
            ["phase", "code"], registry=r,
        )
        self.stage_seconds = StageHistogram(
            "spendgate_stage_seconds", "Time a decision spends per stage (facts, policy, counters, database, total).",
            _LATENCY_BUCKETS, [(p, stage) for p in PHASES for stage in STAGES], r,
        )
        self.records = Counter(
            "spendgate_records", "Spend records that landed in the ledger, by outcome.", ["outcome"], registry=r,
        )
        self.record_duplicates = Counter(
            "spendgate_record_duplicates", "Record retries that found the request already recorded.", registry=r,
        )
        self.record_conflicts = Counter(
            "spendgate_record_conflicts", "Records refused with 409: same request id, other cost or outcome.",
            registry=r,
        )
        self.reservation_expiries = Counter(
            "spendgate_reservation_expiries", "Reservations released because they were never recorded in time.",
            registry=r,
        )
        self.counter_rebuilds = Counter(
            "spendgate_counter_rebuilds", "Ledger counters rebuilt from the ledger store after they went missing.",
            registry=r,
        )
        self.reconcile_runs = Counter(
            "spendgate_reconcile_runs", "Reconcile runs, by result (clean|drift|error).", ["result"], registry=r,
        )
        self.reconcile_drifting = Gauge(
            "spendgate_reconcile_drifting_ledgers", "Ledgers whose counter drifted, found by the last reconcile run, "
            "by problem.", ["problem"], registry=r,
        )
        self.reconcile_spent_drift = Gauge(
            "spendgate_reconcile_spent_drift_usd", "Sum of |counter spent - ledger spent| found by the last reconcile "
            "run (USD).", registry=r,
        )
        self.reconcile_reserved_drift = Gauge(
            "spendgate_reconcile_reserved_drift_usd", "Sum of |reserved - open holds| found by the last reconcile "
            "run (USD).", registry=r,
        )
        self.reconcile_repairs = Counter(
            "spendgate_reconcile_repairs", "Ledger counters repaired by reconcile.", registry=r,
        )
        self.policy_reloads = Counter(
            "spendgate_policy_reloads", "Changed policy sets found on disk, by result (applied: live now; rejected: "
            "did not load, compile or pass SPENDGATE_POLICY_GATE, the previous revision keeps serving).", ["result"],
            registry=r,
        )
        self.policy_reload_rejected = Gauge(
            "spendgate_policy_reload_rejected", "1 while the newest policy files on disk are rejected (the previous "
            "revision keeps serving), 0 otherwise.", registry=r,
        )
        self.policy_compiled = Gauge(
            "spendgate_policy_compiled", "1 while the live policy revision is decided by the embedded engine's "
            "compiled VM; 0 while its interpreter or OPA decides (docs/operations.md).", registry=r,
        )
        self.records_after_denial = Counter(
            "spendgate_records_after_denial", "Records charged for a request whose authorize was denied: the gateway "
            "ignored the denial (enforcement bypassed; an enforcement_bypassed alert names the key).", registry=r,
        )
        self.alert_deliveries = Counter(
            "spendgate_alert_deliveries", "Alert delivery attempts to the webhooks, by result (delivered; retry: "
            "failed, another attempt is due; failed: out of attempts).", ["result"], registry=r,
        )
        self.background_dropped = Counter(
            "spendgate_background_dropped", "Recent decisions and budget_exceeded events dropped because this "
            "replica's background-writer queue was full.", registry=r,
        )
        self.reconcile_last_run = Gauge(
            "spendgate_reconcile_last_run_timestamp_seconds", "When the last reconcile run finished (Unix time).",
            registry=r,
        )

        # Bind the hot-path children once (this also makes every series visible at 0).
        self._decisions = {
            (p, d): self.decisions.labels(p, d)
            for p, outcomes in (("authorize", ("allow", "deny")), ("record", ("recorded", "duplicate", "conflict")))
            for d in outcomes
        }
        self._records = {outcome: self.records.labels(outcome) for outcome in ("success", "failure")}
        for code in _DENY_CODES:
            for entity_type in _ENTITY_TYPES:
                self.deny_reasons.labels(code, entity_type)
        for problem in RECONCILE_PROBLEMS:
            self.reconcile_drifting.labels(problem)
        for result in ("applied", "rejected"):
            self.policy_reloads.labels(result)
        for result in ("delivered", "retry", "failed"):
            self.alert_deliveries.labels(result)

    # --- the decision path ------------------------------------------------------------

    def observe_stages(self, phase: str, timings: dict[str, float]) -> None:
        """One observation per stage the decision went through (seconds)."""
        observe = self.stage_seconds.observe
        for stage, seconds in timings.items():
            observe(phase, stage, seconds)

    def count_decision(self, phase: str, decision: str) -> None:
        child = self._decisions.get((phase, decision))
        (child or self.decisions.labels(phase, decision)).inc()

    def count_reasons(self, reasons: Iterable[dict[str, object]]) -> None:
        for reason in reasons:
            entity = reason.get("entity")
            entity_type = entity.get("type") if isinstance(entity, dict) else None
            self.deny_reasons.labels(str(reason.get("code") or "unknown"), str(entity_type or "none")).inc()

    def count_record(self, outcome: str) -> None:
        self._records[outcome].inc()

    # --- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
