"""The tables of the SQL stores and their migrations, written once for every dialect.

A database records the last migration it ran in ``durable_schema``; opening a
store runs the ones after it, in one transaction, so every process sees the
old schema or the new one. A database newer than this code is refused.
Releases before version 3 made their own indexes per database; version 3
replaces them with one set, so a database made by any release, migrated, has
exactly the schema a new one gets.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from ...errors import StoreError
from ..base import RUNNING, WAITING
from ..sealing import Keyring
from .dialect import Dialect
from .resealing import reseal_all


def sign_unsigned(connection: Any, d: Dialect, keys: Keyring) -> None:
    """Releases before signing saved plain pickles: sealed here with the store's key, once, as
    the schema moves past them (whoever could write the database then could run code already).
    A store that does not sign leaves them (``durable resign --adopt-unsigned`` signs them)."""
    if keys.signs:
        reseal_all(connection, d, functools.partial(keys.resealed, adopt_unsigned=True, left=[]))


# Version n of the schema is what the first n lists of steps make: statements (``{d.word}``
# is the dialect's word), or data migrations run with the store's keys.
MIGRATIONS: list[list[str | Callable[[Any, Dialect, Keyring], None]]] = [
    [  # 1: instances and their events
        """CREATE TABLE durable_instances (
            id TEXT PRIMARY KEY,
            program TEXT NOT NULL,
            status TEXT NOT NULL,
            waiting_for TEXT,
            state {d.blob} NOT NULL,
            created_at {d.real} NOT NULL,
            updated_at {d.real} NOT NULL,
            lease_owner TEXT,
            lease_expires {d.real},
            fence {d.int64} NOT NULL DEFAULT 0,
            reason TEXT
        )""",
        """CREATE TABLE durable_events (
            id {d.event_key},
            instance_id TEXT NOT NULL,
            name TEXT NOT NULL,
            payload {d.blob},
            published_at {d.real} NOT NULL
        )""",
    ],
    [  # 2: timers, waits of fan-out branches, suspension
        "ALTER TABLE durable_instances ADD COLUMN wake_at {d.real}",
        "ALTER TABLE durable_instances ADD COLUMN waits {d.names}",
        "ALTER TABLE durable_instances ADD COLUMN suspended {d.boolean} NOT NULL"
        " DEFAULT {d.false}",
    ],
    [  # 3: one set of indexes for every database (each the index of one query)
        "DROP INDEX IF EXISTS durable_instances_by_status",
        "DROP INDEX IF EXISTS durable_instances_by_wake",
        "DROP INDEX IF EXISTS durable_events_by_instance",
        # claim: unfinished instances of some programs, least recently saved first
        "CREATE INDEX IF NOT EXISTS durable_instances_runnable ON durable_instances"
        f" (program, updated_at) WHERE status IN ('{RUNNING}', '{WAITING}')",
        # list: newest first
        "CREATE INDEX IF NOT EXISTS durable_instances_by_creation"
        " ON durable_instances (created_at)",
        # next_wake: the earliest timer
        "CREATE INDEX durable_instances_by_wake ON durable_instances (wake_at)"
        f" WHERE status = '{WAITING}'",
        # events of an instance, by name (is what it waits for there?), in publish order
        "CREATE INDEX durable_events_by_instance ON durable_events (instance_id, name, id)",
    ],
    [  # 4: the code an instance needs and where its frames stand; why no worker could run it
        "ALTER TABLE durable_instances ADD COLUMN code TEXT",
        "ALTER TABLE durable_instances ADD COLUMN positions TEXT",
        "ALTER TABLE durable_instances ADD COLUMN blocked TEXT",
        "ALTER TABLE durable_instances ADD COLUMN blocked_by TEXT",
    ],
    [  # 5: what the start that created an instance asked for (base.start_digest)
        "ALTER TABLE durable_instances ADD COLUMN start_digest TEXT",
    ],
    [  # 6: keys that hold every valid id (up to 4,000 bytes of UTF-8) where an index row
        # cannot (a dialect's statements; none for SQLite)
        "{d.unique_ids}",
        "{d.events_by_instance}",
    ],
    [  # 7: every state and payload signed (stores.sealing)
        sign_unsigned,
    ],
    [  # 8: what a person sees of a waiting or ended instance (runtime.summary), as JSON
        "ALTER TABLE durable_instances ADD COLUMN summary TEXT",
    ],
    [  # 9: what happened to each instance, in order (durable.history)
        """CREATE TABLE durable_history (
            id {d.event_key},
            instance_id TEXT NOT NULL,
            at {d.real} NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL
        )""",
        "{d.history_by_instance}",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: Any, d: Dialect, where: str, keys: Keyring) -> None:
    """Bring the schema of an open database up to the last version."""
    connection.execute(d.begin)
    try:
        if d.schema_lock is not None:
            connection.execute(d.schema_lock)
        connection.execute("CREATE TABLE IF NOT EXISTS durable_schema (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM durable_schema").fetchone()
        version = 0 if row is None else row[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{where} has durable schema version {version}; this version of "
                             f"durable knows up to {SCHEMA_VERSION}")
        for steps in MIGRATIONS[version:]:
            for step in steps:
                if callable(step):
                    step(connection, d, keys)
                elif sql := step.format(d=d):  # a dialect may have nothing to do
                    connection.execute(sql)
        if row is None:
            connection.execute(d.render("INSERT INTO durable_schema (version) VALUES (:version)"),
                               {"version": SCHEMA_VERSION})
        elif version != SCHEMA_VERSION:
            connection.execute(d.render("UPDATE durable_schema SET version = :version"),
                               {"version": SCHEMA_VERSION})
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(*d.errors):  # a lost connection has rolled back already
            connection.execute("ROLLBACK")
        raise
