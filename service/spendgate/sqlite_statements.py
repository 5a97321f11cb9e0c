"""SQLAlchemy Core statements run on a raw `sqlite3` connection: the embedded database's one writer.

A SQLite file has one write lock. Everything the service writes to it goes through one connection
and thread (`counters/sqlite_worker.py`), group-committed: the counters' decisions, the records
(`ledger_store.py`), the recent decisions (`decision_store/sqlite_writes.py`). A second writer — the
engine's own connection — made each side wait for the lock, and SQLite's busy handler sleeps
between tries (bench/README.md, seventeenth round).

The statements are still SQLAlchemy's: each is compiled once for the SQLite dialect, with the
engines' JSON codec, and every value goes through its column type's bind processor (UTC timestamps
as SQLAlchemy stores them, JSON as the engine writes it), so the rows are those a session writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.sql.dml import Insert

from .db import JSON_CODEC

__all__ = ["SQLITE_DIALECT", "SqliteStatement"]

#: The dialect the statements are compiled for: the engine's (aiosqlite is pysqlite's), same JSON codec.
SQLITE_DIALECT = SQLiteDialect_pysqlite(**JSON_CODEC)


class SqliteStatement:
    """An INSERT (upsert, RETURNING: whatever the statement says) of `columns`, compiled once.

    Its parameters are the columns' values, taken from each row, and any constant the statement
    holds (`version + 1`'s 1), bound once."""

    def __init__(self, statement: Insert, columns: Sequence[str]) -> None:
        compiled = statement.compile(dialect=SQLITE_DIALECT, column_keys=list(columns))
        if compiled.positiontup is None:  # pragma: no cover - pysqlite's paramstyle is qmark
            raise TypeError("the SQLite dialect takes positional parameters")
        self.statement = statement
        self.sql = str(compiled)
        wanted = set(columns)
        #: Per placeholder: (column name, its bind processor), or (None, the constant as bound).
        self._binds: list[tuple[str | None, Any]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(SQLITE_DIALECT).bind_processor(SQLITE_DIALECT)
            if name in wanted:
                self._binds.append((name, process))
            else:
                value = bind.effective_value
                self._binds.append((None, value if process is None else process(value)))

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's values (and the constants) in placeholder order, as their types bind them."""
        return tuple(
            bound if name is None else row[name] if bound is None else bound(row[name])
            for name, bound in self._binds
        )

    def many(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return [self.parameters(row) for row in rows]
