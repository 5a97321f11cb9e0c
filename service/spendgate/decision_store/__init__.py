"""Recent decisions (GET /v1/reports/decisions): a bounded store written off the decision path."""

from .store import StoredRow, recent, row_from_answer
from .writer import BackgroundWriter

__all__ = ["BackgroundWriter", "StoredRow", "recent", "row_from_answer"]
