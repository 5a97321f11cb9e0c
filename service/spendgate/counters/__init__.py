"""Hot counters of ledger spend and reservations: the port and its two adapters.

`RedisCounters` shares counters between replicas through atomic Lua scripts; `SqlCounters`
keeps them in the ledger database itself (the embedded SQLite default, or Postgres alone).
"""

from .base import CommitOutcome, Counters, Figures, Hold, SnapshotLoader, StoredDecision
from .redis_counters import RedisCounters
from .sql_counters import SqlCounters

__all__ = [
    "Counters",
    "Figures",
    "Hold",
    "CommitOutcome",
    "StoredDecision",
    "SnapshotLoader",
    "RedisCounters",
    "SqlCounters",
]
