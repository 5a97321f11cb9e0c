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

A logger whose only way out is this handler (`sole_writer`) may skip the `LogRecord` altogether:
`write_info(name, message)` queues the time and the text, and the writer makes the same line from
them. Building a record (`Logger.info`: the caller's frame, the thread, the process) and formatting
it took ~half of the decision log's cost per decision. Add a handler or a filter to the logger, or
let it propagate, and `sole_writer` finds none: every line then goes through `Logger.info` again.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from typing import TextIO

__all__ = ["BatchedStreamHandler", "LINGER_SECONDS", "sole_writer"]

#: How long the writer lets lines gather after the first one arrives (one write per batch).
LINGER_SECONDS = 0.02


#: The record fields a line written without a LogRecord can fill (`write_info`).
_DIRECT_FIELDS = frozenset({"asctime", "levelname", "name", "message"})


class _SecondCachedFormatter(logging.Formatter):
    """`logging.Formatter`, with the `asctime` text of the current second made once."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._fmt_text = fmt
        self._second = -1
        self._second_text = ""

    def _asctime(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        # LogRecord's msecs, as it computes them (created's fraction, truncated to milliseconds)
        return f"{self._second_text},{int((created - second) * 1000):03d}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (stdlib name)
        return self._asctime(record.created)

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        """What `format` gives a record with these fields (for a format using no other field)."""
        return self._fmt_text % {"asctime": self._asctime(created), "levelname": levelname, "name": name,
                                 "message": message}


def _fields(fmt: str) -> set[str]:
    """The record fields a %-style format names (`%(name)s` → `name`)."""
    return set(re.findall(r"%\((\w+)\)", fmt))


class BatchedStreamHandler(logging.Handler):
    """Lines written to `stream` (stderr by default) by a thread of its own, a batch per write."""

    def __init__(self, fmt: str, stream: TextIO | None = None) -> None:
        super().__init__()
        self._line_maker = _SecondCachedFormatter(fmt)
        self.setFormatter(self._line_maker)
        #: Whether a line can be made without a record: the format names no other field.
        self.writes_direct = _fields(fmt) <= _DIRECT_FIELDS
        self._stream = stream if stream is not None else sys.stderr
        # Records, or (time, level name, logger name, message) of write_info. append and popleft are thread-safe.
        self._records: deque[logging.LogRecord | tuple[float, str, str, str]] = deque()
        self._wake = threading.Event()
        self._writing = threading.Lock()  # one batch at a time: lines stay in order
        self._thread = threading.Thread(target=self._run, name="spendgate-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if not self._wake.is_set():
            self._wake.set()

    def write_info(self, name: str, message: str) -> None:
        """Queue `message` as an INFO line of the logger `name`, without a LogRecord (see `sole_writer`)."""
        self._records.append((time.time(), "INFO", name, message))
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
                if isinstance(record, tuple):
                    lines.append(self._line_maker.line(*record))
                    continue
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


def sole_writer(logger: logging.Logger) -> BatchedStreamHandler | None:
    """The handler through which alone `logger`'s INFO lines leave, when it may be handed lines directly:
    one BatchedStreamHandler with a format it can fill, no other handler, no filter, no propagation."""
    if logger.propagate or logger.filters or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if not isinstance(handler, BatchedStreamHandler) or not handler.writes_direct or handler.filters:
        return None
    return handler if handler.level <= logging.INFO else None
