"""Hot reload: when a policy file changes, compile the new set and swap it in atomically.

A set that fails to load or compile is rejected with a logged error; the old set keeps
serving. Change detection polls a cheap fingerprint (path, size, mtime of every file), so
no file-watching dependency is needed and it works on any filesystem, including mounts.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..errors import SpendgateError, Unavailable
from .engine import PolicyEngine
from .loader import load_policy_set

__all__ = ["fingerprint", "PolicyReloader"]

log = logging.getLogger("spendgate.policy")


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when any policy or data file is added, removed or edited."""
    entries = []
    for path in root.rglob("*"):
        if path.is_file() and (path.suffix == ".rego" or path.name == "data.json"):
            stat = path.stat()
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class PolicyReloader:
    """Polls `root` and swaps changed policy sets into `engine`."""

    def __init__(self, engine: PolicyEngine, root: Path, *, interval_seconds: float = 1.0) -> None:
        self._engine = engine
        self._root = root
        self._interval = interval_seconds
        self._seen = fingerprint(root)
        #: The last rejected set's error, for /readyz and operators (None when the live set is current).
        self.last_error: str | None = None

    async def check_once(self) -> bool:
        """Reload if anything changed; True when a new revision went live."""
        current = fingerprint(self._root)
        if current == self._seen:
            return False
        try:
            policies = load_policy_set(self._root)
            if policies.revision == self._engine.revision:
                self._seen = current
                return False
            await self._engine.swap(policies)
        except Unavailable as exc:
            # The engine (OPA) could not be reached: not a verdict on the policies; try again next time.
            log.warning("policy reload postponed, still serving %s: %s", self._engine.revision, exc.message)
            return False
        except SpendgateError as exc:
            self._seen = current  # rejected for good until the files change again
            self.last_error = exc.message
            log.error("policy reload rejected, still serving %s: %s", self._engine.revision, exc.message)
            return False
        self._seen = current
        self.last_error = None
        log.info("policies reloaded: now serving %s", policies.revision)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception:  # noqa: BLE001 — the watcher must outlive any one failure
                log.exception("policy reload check failed")
