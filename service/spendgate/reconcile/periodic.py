"""The service's own reconcile: every `reconcile_interval_seconds`, on every replica.

What it repairs, and why: with `reconcile_fix` (the default) it repairs `spent` drift — the
counter is a cache of the ledger, and the repair is the version-gated snapshot write every
record already does — and `reserved` drift, recomputed from the open holds inside one Lua
script (or one locking transaction), because a leaked reservation refuses requests against a
budget that has room until someone notices (the "false over budget" failure Spendgate exists
to prevent), and a lost one lets a budget overshoot. Both repairs derive only from
authoritative state and cannot race live traffic. A counter *ahead* of the ledger is only
reported: it means the ledger was restored or edited, and lowering spend admits more traffic —
a human decides (`spendgate reconcile --fix`). Everything found is exported as metrics and
logged at WARNING, so a repair never hides the bug that caused the drift. It also re-derives
the console's ranking tier of ledgers charged without it (`headroom_tiers.py`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from ..errors import SpendgateError
from ..metrics import RECONCILE_PROBLEMS, Metrics
from ..money import NANOS_PER_USD
from ..runtime import Runtime
from . import Reconciler, reconciler_for
from .headroom_tiers import refresh_headroom_tiers
from .report import ReconcileReport, render_text

__all__ = ["reconcile_once", "reconcile_periodically", "publish"]

log = logging.getLogger("spendgate.reconcile")


def publish(metrics: Metrics, report: ReconcileReport) -> None:
    """Export what a run found (gauges describe the last run; repairs accumulate)."""
    for problem in RECONCILE_PROBLEMS:
        metrics.reconcile_drifting.labels(problem).set(sum(1 for d in report.drifts if problem in d.problems))
    metrics.reconcile_spent_drift.set(report.spent_drift_total / NANOS_PER_USD)
    metrics.reconcile_reserved_drift.set(report.reserved_drift_total / NANOS_PER_USD)
    metrics.reconcile_repairs.inc(report.fixed)
    metrics.reconcile_runs.labels("drift" if report.drifts else "clean").inc()
    metrics.reconcile_last_run.set(time.time())


async def reconcile_once(runtime: Runtime, reconciler: Reconciler | None = None) -> ReconcileReport:
    """One run as the service does it: repair per `reconcile_fix`, publish, log drift."""
    await _refresh_tiers(runtime)  # SQL only: done even when the counters cannot be reached
    reconciler = reconciler or reconciler_for(sessions=runtime.sessions, redis=runtime.redis)
    report = await reconciler.run(fix=runtime.settings.reconcile_fix, fix_ahead=False)
    publish(runtime.metrics, report)
    if report.drifts:
        log.warning("counter drift found by reconcile:\n%s", render_text(report))
    return report


async def _refresh_tiers(runtime: Runtime) -> None:
    """The console ranking's tiers (headroom_tiers.py); a failure is logged and the reconcile goes on."""
    try:
        repaired = await refresh_headroom_tiers(runtime.sessions, runtime.clock())
    except SpendgateError as exc:
        log.warning("headroom tiers not re-derived: %s", exc.message)
        return
    if repaired:
        log.warning("re-derived the headroom tier of %d ledgers charged without it (a replica before "
                    "migration 0007, or a hand edit)", repaired)


async def reconcile_periodically(runtime: Runtime) -> None:
    """Run forever (until cancelled); a failed run is counted and logged, the next one still runs."""
    reconciler = reconciler_for(sessions=runtime.sessions, redis=runtime.redis)
    interval = runtime.settings.reconcile_interval_seconds
    while True:
        # Jitter keeps replicas started together from reconciling in lockstep.
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            await reconcile_once(runtime, reconciler)
        except SpendgateError as exc:
            runtime.metrics.reconcile_runs.labels("error").inc()
            log.warning("reconcile skipped: %s", exc.message)
        except Exception:  # noqa: BLE001 — the loop must outlive any one failure
            runtime.metrics.reconcile_runs.labels("error").inc()
            log.exception("reconcile failed")
