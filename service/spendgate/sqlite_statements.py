"""SQLAlchemy Core statements run on a raw `sqlite3` connection: the embedded database's one writer.

A SQLite file has one write lock. What the service writes on its decision path goes through one
connection and thread (`counters/sqlite_worker.py`), group-committed: the counters' decisions, the
records (`ledger_store.py`), the recent decisions and their pruning (`decision_store/sqlite_writes.py`).
A second writer — the engine's own connection — made each side wait for the lock, and SQLite's busy
handler sleeps between tries (bench/README.md, seventeenth round). Admin changes and alert delivery
still write through the engine: they are rare.

The statements are still SQLAlchemy's: each is compiled once for the SQLite dialect, with the
engines' JSON codec, and every value goes through its type's bind processor (UTC timestamps as
SQLAlchemy stores them, JSON as the engine writes it), so the rows are those a session writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from .db import JSON_CODEC

__all__ = ["SQLITE_DIALECT", "SqliteStatement"]

#: The dialect the statements are compiled for: the engine's (aiosqlite is pysqlite's), same JSON codec.
SQLITE_DIALECT = SQLiteDialect_pysqlite(**JSON_CODEC)


class SqliteStatement:
    """A Core statement compiled once: an INSERT (upsert, RETURNING: whatever it says) of `columns`, or
    any statement whose values it holds (then `columns` is empty and it is compiled for one call).

    Its parameters are the columns' values, taken from each row, and every value the statement holds
    (`version + 1`'s 1, a WHERE clause's bound value), bound once."""

    def __init__(self, statement: ClauseElement, columns: Sequence[str] = ()) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=SQLITE_DIALECT, column_keys=list(columns) or None))
        if compiled.positiontup is None:  # pragma: no cover - pysqlite's paramstyle is qmark
            raise TypeError("the SQLite dialect takes positional parameters")
        self.statement = statement
        self.sql = str(compiled)
        wanted = set(columns)
        #: Per placeholder: (column name, its bind processor), or (None, the held value as bound).
        self._binds: list[tuple[str | None, Any]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(SQLITE_DIALECT).bind_processor(SQLITE_DIALECT)
            if name in wanted:
                self._binds.append((name, process))
            else:
                value = bind.effective_value
                self._binds.append((None, value if process is None else process(value)))

    def parameters(self, row: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        """The row's values (and the held ones) in placeholder order, as their types bind them."""
        return tuple(
            bound if name is None else row[name] if bound is None else bound(row[name])  # type: ignore[index]
            for name, bound in self._binds
        )

    def many(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return [self.parameters(row) for row in rows]
