"""Recent decisions (GET /v1/reports/decisions): a bounded store written off the decision path."""

from .store import StoredRow, new_decision_id, recent, row_from_answer
from .sqlite_writes import SqliteBatchWriter
from .writer import BackgroundWriter

__all__ = ["BackgroundWriter", "SqliteBatchWriter", "StoredRow", "new_decision_id", "recent", "row_from_answer"]
