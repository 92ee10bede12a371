"""Dialect: the few places where SQLite's and PostgreSQL's SQL must differ.

Statements and migrations are written once (``statements.py``, ``schema.py``),
with ``:name`` parameters and a dialect's words where the databases differ:
column types, the database's clock, row locks, list membership. ``render``
turns the parameters into the driver's style. A new database is a new
``Dialect`` plus a connection layer (see ``SqlStore``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # ':name', not a '::type' cast


@dataclass(frozen=True)
class Dialect:
    # Column types.
    blob: str  # pickled bytes
    real: str  # seconds since the epoch
    int64: str  # a counter
    boolean: str  # a flag, whose default is ``false``
    false: str
    names: str  # a list of names, as ``list_value`` encodes it
    event_key: str  # the events table's key: an integer that grows with every insert
    # Migration 6: make ids of every valid length unique, and index events by instance, where
    # the first migrations' btree indexes cannot hold them (statements joined by "; ", or "").
    unique_ids: str
    events_by_instance: str
    # Migration 9: the index of the history by instance (the same constraint).
    history_by_instance: str
    # Words of statements.
    now: str  # the database's clock, in seconds since the epoch (a float)
    begin: str  # starts a transaction that writes
    lock_rows: str  # ends a SELECT of rows to update: lock them, skip rows others hold
    lock_row: str  # ends a SELECT of one row to update: lock it
    schema_lock: str | None  # serialises migrations across processes, inside their transaction
    announce: str | None  # an expression that wakes other processes' workers when its
    # transaction commits (a publish returns it, so it needs no statement of its own)
    errors: tuple[type[BaseException], ...]  # the driver's database errors
    # Whether transactions of many connections write at once (PostgreSQL's row locks), or
    # one at a time (SQLite's file lock): then every write takes the lock first (``begin``),
    # goes through the store's writer, and a claim looks before it takes the lock.
    many_writers: bool
    # Whether ``now`` is a server's clock, shared by processes on many machines whose own clocks
    # may disagree: workers then read the time from it (``SqlStore.now``) for their timers. If
    # not, it is the machine's clock, which every process of the store reads already.
    server_clock: bool = False

    @property
    def notify(self) -> str | None:
        """A statement that wakes other processes' workers when its transaction commits."""
        return None if self.announce is None else f"SELECT {self.announce}"

    def render(self, sql: str) -> str:
        """A statement written with ``:name`` parameters, as this database's driver runs it."""
        return sql

    def execute_together(self, connection: Any, statements: list[str]) -> None:
        """Run statements that take no parameters, in order (in one round trip where the
        database can)."""
        for statement in statements:
            connection.execute(statement)

    def read_blobs(self, connection: Any, sql: str, params: Any) -> Any:
        """Run a statement whose rows carry large blobs (states, payloads). Where the driver
        can, their rows come in binary: a blob arrives as itself, not as text twice its size
        (held twice over while the driver reads it)."""
        return connection.execute(sql, params)

    def member(self, value: str, names: str) -> str:
        """SQL: ``value`` is one of the list ``names`` (a parameter or a column)."""
        raise NotImplementedError

    def list_value(self, items: Sequence[Any]) -> Any:
        """A list as a parameter or column value that ``member`` looks into."""
        raise NotImplementedError

    def rolled_back(self, error: BaseException) -> bool:
        """True if ``error`` rolled a statement back to let another transaction through (a
        deadlock, a serialization failure): running it again may succeed."""
        return False


def pyformat(sql: str) -> str:
    """``:name`` parameters as ``%(name)s``, for drivers of the DB-API's pyformat style."""
    return _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))
