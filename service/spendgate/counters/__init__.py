"""Hot counters of ledger spend and reservations: the port and its three adapters.

`RedisCounters` shares counters between replicas through atomic Lua scripts; `SqliteCounters`
(the embedded default) and `SqlCounters` (PostgreSQL alone) keep them in the ledger database
itself. `counters_for` picks one by URL scheme (counters/choice.py).
"""

from .base import CommitOutcome, Counters, Figures, Hold, SeenFigures, SnapshotLoader, StoredDecision
from .redis_counters import RedisCounters
from .replica_memory import ReplicaMemory
from .sql_counters import SqlCounters
from .sqlite_counters import SqliteCounters
from .choice import counters_for

__all__ = [
    "Counters",
    "Figures",
    "SeenFigures",
    "Hold",
    "CommitOutcome",
    "StoredDecision",
    "SnapshotLoader",
    "RedisCounters",
    "ReplicaMemory",
    "SqlCounters",
    "SqliteCounters",
    "counters_for",
]
