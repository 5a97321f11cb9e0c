"""Hot reload: when a policy file changes, check the new set and swap it in atomically.

A set that fails to load, compile or pass the gate (SPENDGATE_POLICY_GATE, see `gate.py`) is
rejected: the old set keeps serving, and the rejection is kept (`rejected`, for /readyz) and
counted (`spendgate_policy_reloads_total{result}`, `spendgate_policy_reload_rejected`) until
the files change again. Change detection polls a cheap fingerprint (path, size, mtime of every
file), so no file-watching dependency is needed and it works on any filesystem, including mounts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, NamedTuple

from ..errors import SpendgateError, Unavailable
from .engine import PolicyEngine
from .gate import GATES, PolicyGate, policy_gate
from .loader import load_policy_set

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..settings import Settings

__all__ = ["fingerprint", "PolicyReloader", "RejectedReload", "policy_reloader"]

log = logging.getLogger("spendgate.policy")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class RejectedReload(NamedTuple):
    """The newest policy files on disk, refused: the previous revision keeps serving."""

    #: None when the files could not even be read into a set (e.g. invalid data.json).
    revision: str | None
    #: `file:line:col: message`, or the failing policy tests.
    error: str
    at: datetime


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when any policy or data file is added, removed or edited.

    It runs on the event loop every `interval_seconds`, so it is kept cheap: `os.walk` and `os.stat`
    take half the time `Path.rglob` and `Path.stat` did on the shipped policies (~0.26 against ~0.52 ms)."""
    entries = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".rego") or name == "data.json":
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except OSError:  # removed since the folder was listed, a dangling or looping link: not a policy
                    continue
                if not S_ISREG(stat.st_mode):
                    continue
                entries.append((Path(os.path.relpath(path, root)).as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class PolicyReloader:
    """Polls `root` and swaps changed policy sets that pass `gate` into `engine`.

    With the test gate the tests beside `root` are polled too: an edited test re-runs the gate.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        root: Path,
        *,
        interval_seconds: float = 1.0,
        gate: PolicyGate = GATES["compile"],
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._engine = engine
        self._root = root
        self._interval = interval_seconds
        self._gate = gate
        self._metrics = metrics
        self._clock = clock
        self._seen = self._fingerprint()
        #: When the live revision went live (for this reloader: when it was created, at start-up).
        self.loaded_at = clock()
        #: The newest files' rejection while they are rejected; None when the live set is the newest.
        self.rejected: RejectedReload | None = None

    @property
    def last_error(self) -> str | None:
        """The last rejected set's error (None when the live set is current)."""
        return self.rejected.error if self.rejected else None

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        watched = self._gate.watched(self._root)  # each time: a policy_tests/ made later counts too
        return tuple(entry for path in watched if path.is_dir() for entry in fingerprint(path))

    async def check_once(self) -> bool:
        """Reload if anything changed; True when a new revision went live."""
        current = self._fingerprint()
        if current == self._seen:
            return False
        revision: str | None = None
        try:
            policies = load_policy_set(self._root)
            revision = policies.revision
            if revision == self._engine.revision:  # e.g. an edit undone, or only a test changed
                self._seen = current
                self._clear_rejection()
                return False
            await self._gate.check(policies)
            await self._engine.swap(policies)
        except Unavailable as exc:
            # The engine (OPA) could not be reached: not a verdict on the policies; try again next time.
            log.warning("policy reload postponed, still serving %s: %s", self._engine.revision, exc.message)
            return False
        except SpendgateError as exc:
            self._seen = current  # rejected for good until the files change again
            self._reject(revision, exc.message)
            return False
        self._seen = current
        self._clear_rejection()
        self.loaded_at = self._clock()
        if self._metrics is not None:
            self._metrics.policy_reloads.labels("applied").inc()
        log.info("policies reloaded: now serving %s", revision)
        return True

    def _reject(self, revision: str | None, error: str) -> None:
        # /readyz gets the first line (file:line:col: message); the log keeps the source excerpt too.
        self.rejected = RejectedReload(revision, (error.splitlines() or [""])[0], self._clock())
        if self._metrics is not None:
            self._metrics.policy_reloads.labels("rejected").inc()
            self._metrics.policy_reload_rejected.set(1)
        log.error("policy reload rejected, still serving %s: %s", self._engine.revision, error)

    def _clear_rejection(self) -> None:
        """The newest files are the live set."""
        self.rejected = None
        if self._metrics is not None:
            self._metrics.policy_reload_rejected.set(0)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception:  # noqa: BLE001 — the watcher must outlive any one failure
                log.exception("policy reload check failed")


def policy_reloader(engine: PolicyEngine, settings: Settings, metrics: Metrics) -> PolicyReloader:
    """The service's reloader, as the settings configure it (polling starts only when `run` is awaited)."""
    return PolicyReloader(
        engine,
        settings.policy_dir,
        interval_seconds=settings.policy_reload_seconds,
        gate=policy_gate(settings.policy_gate),
        metrics=metrics,
    )
