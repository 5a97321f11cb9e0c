"""The decision log's writer (spendgate/log_writer.py): the stdlib format, every line in order, a batch
per write, everything written by close()."""

from __future__ import annotations

import io
import logging
import threading

from spendgate.log_writer import BatchedStreamHandler

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
