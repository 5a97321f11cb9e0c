"""The decision log's writer (spendgate/log_writer.py): the stdlib format, every line in order, a batch
per write, everything written by close()."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from spendgate.log_writer import BatchedStreamHandler, sole_writer

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writes += 1
        self.written.set()
        return super().write(text)


def _records(count: int) -> list[logging.LogRecord]:
    return [logging.LogRecord("spendgate.decisions", logging.INFO, __file__, 1, f'{{"n":{i}}}', None, None)
            for i in range(count)]


def test_lines_are_the_stdlib_formatters_in_order_and_all_written_by_flush() -> None:
    stream = _CountingStream()
    handler = BatchedStreamHandler(FORMAT, stream)
    records = _records(2_000)
    for record in records:
        handler.handle(record)
    handler.flush()
    expected = [logging.Formatter(FORMAT).format(record) for record in records]
    assert stream.getvalue().splitlines() == expected
    assert stream.writes < len(records) / 10  # batches, not a write per line


def test_a_line_reaches_the_stream_without_flush_also_after_close() -> None:
    """uvicorn's logging set-up closes every handler and leaves this one on its logger."""
    stream = _CountingStream()
    handler = BatchedStreamHandler(FORMAT, stream)
    handler.close()
    handler.handle(_records(1)[0])
    assert stream.written.wait(timeout=10)
    assert stream.getvalue().endswith(' INFO spendgate.decisions: {"n":0}\n')


def test_a_closed_stream_does_not_stop_the_writer() -> None:
    stream = _CountingStream()
    stream.close()
    handler = BatchedStreamHandler(FORMAT, stream)
    handler.handle(_records(1)[0])
    handler.flush()  # the ValueError of a closed stream is swallowed
    handler.handle(_records(1)[0])
    handler.flush()
    assert stream.writes == 2


def test_a_line_written_without_a_record_is_the_line_the_record_would_make(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _CountingStream()
    handler = BatchedStreamHandler(FORMAT, stream)
    assert handler.writes_direct
    record = _records(1)[0]
    handler.handle(record)
    handler.write_info("spendgate.decisions", '{"n":0}')
    handler.flush()
    by_record, direct = stream.getvalue().splitlines()
    assert by_record == logging.Formatter(FORMAT).format(record)
    # the same text but the time stamp, which is the write's own (same shape: date, time, milliseconds)
    assert direct.split(" ", 2)[2] == by_record.split(" ", 2)[2]
    assert [len(part) for part in direct.split(" ", 2)[:2]] == [10, 12]
    # and the time stamp is the one the stdlib gives a record made at that instant (its own msecs rounding)
    for created in (1_795_922_784.987654, 1_795_922_784.0009, 1_795_922_785.999999):
        monkeypatch.setattr(logging.time, "time", lambda: created)
        stamped = logging.LogRecord("spendgate.decisions", logging.INFO, __file__, 1, "x", None, None)
        made = handler._line_maker.line(created, "INFO", "spendgate.decisions", "x")
        assert made == logging.Formatter(FORMAT).format(stamped)


def _logger_with(handler: logging.Handler, name: str = "spendgate.test-sole-writer") -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.filters[:] = []
    logger.propagate = False
    return logger


def test_sole_writer_is_found_only_while_it_is_the_loggers_only_way_out() -> None:
    handler = BatchedStreamHandler(FORMAT, _CountingStream())
    logger = _logger_with(handler)
    assert sole_writer(logger) is handler
    logger.propagate = True  # the root's handlers (e.g. pytest's caplog) would miss direct lines
    assert sole_writer(logger) is None
    logger.propagate = False
    other = logging.StreamHandler(io.StringIO())
    logger.addHandler(other)
    assert sole_writer(logger) is None
    logger.removeHandler(other)
    logger.addFilter(lambda record: True)
    assert sole_writer(logger) is None
    logger.filters[:] = []
    handler.setLevel(logging.WARNING)
    assert sole_writer(logger) is None
    handler.setLevel(logging.NOTSET)
    assert sole_writer(logger) is handler
    # a format naming a field a direct line cannot fill (the caller's line number) needs records
    assert sole_writer(_logger_with(BatchedStreamHandler("%(lineno)d %(message)s", _CountingStream()))) is None
