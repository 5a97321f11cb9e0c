"""A logging handler that writes lines in batches from its own thread (the decision log's).

Every decision is a log line. Written by `StreamHandler`, each one cost a write and a flush; behind
the stdlib `QueueHandler`, a copy of the record on the request's path and the same write and flush
per line on the listener's thread. Measured with bench/floor.py, that was ~20 % of a replica's
authorize throughput at 16 connections (`--spendgate-setting SPENDGATE_DECISION_LOG=false`). Here
the request only appends the record to a deque. The writer thread formats whatever has gathered,
with the time stamp's text made once per second, and writes it in one call. Lines keep their order
and their format (`%(asctime)s %(levelname)s %(name)s: %(message)s`); they reach the stream at most
`LINGER_SECONDS` later, and all of them by `flush()` (registered at exit by cli.py).

`close()` writes what is pending but leaves the thread running: uvicorn's logging set-up closes
every handler there is (`logging.config.dictConfig`) and yet leaves this one on its logger.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from typing import TextIO

__all__ = ["BatchedStreamHandler", "LINGER_SECONDS"]

#: How long the writer lets lines gather after the first one arrives (one write per batch).
LINGER_SECONDS = 0.02


class _SecondCachedFormatter(logging.Formatter):
    """`logging.Formatter`, with the `asctime` text of the current second made once."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (stdlib name)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


class BatchedStreamHandler(logging.Handler):
    """Lines written to `stream` (stderr by default) by a thread of its own, a batch per write."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        super().__init__()
        self.setFormatter(_SecondCachedFormatter(fmt))
        self._stream = stream if stream is not None else sys.stderr
        self._records: deque[logging.LogRecord] = deque()  # append and popleft are thread-safe
        self._wake = threading.Event()
        self._writing = threading.Lock()  # one batch at a time: lines stay in order
        self._thread = threading.Thread(target=self._run, name="spendgate-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(LINGER_SECONDS)  # let a batch gather
            self._wake.clear()  # before draining: a record appended from here on wakes the next round
            self.flush()

    def flush(self) -> None:
        """Write every record queued so far, in one write."""
        with self._writing:
            lines: list[str] = []
            while self._records:
                record = self._records.popleft()
                try:
                    lines.append(self.format(record))
                except Exception:  # a record that cannot be formatted is reported, as logging does
                    self.handleError(record)
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):  # the reader went away (closed pipe, closed stream)
                    pass

    def close(self) -> None:
        self.flush()
        super().close()
