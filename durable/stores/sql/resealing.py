"""Sealing a SQL store's blobs anew, a batch at a time: after a key rotation
(``SqlStore.resign``), and once, as schema 7, the unsigned blobs of releases before signing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..sealing import payload_bound, payload_named, state_bound, state_named
from .dialect import Dialect

BATCH = 500  # rows read at once
# (blob, bound, named) -> the blob sealed now, None to leave it (Keyring.resealed)
Resealed = Callable[[bytes, bytes, str], bytes | None]


@dataclass(frozen=True)
class Table:
    name: str
    columns: str  # its id first, the blob last
    blob: str
    bound: Callable[[Any], bytes]
    named: Callable[[Any], str]


TABLES = (
    Table("durable_instances", "id, state", "state",
          lambda row: state_bound(row[0]), lambda row: state_named(row[0])),
    Table("durable_events", "id, instance_id, name, payload", "payload",
          lambda row: payload_bound(row[1], row[2]),
          lambda row: payload_named(row[1], row[2], str(row[0]))),
)


def reseal_batch(connection: Any, d: Dialect, table: Table, after: Any,
                 resealed: Resealed) -> tuple[Any, int]:
    """Reseal the next rows of ``table`` (ids after ``after``): the last id read (None once the
    table is done) and how many rows changed. A blob written anew meanwhile is left to its
    writer (the update compares)."""
    where = f"{table.blob} IS NOT NULL" + ("" if after is None else " AND id > :after")
    rows = d.read_blobs(connection, d.render(
        f"SELECT {table.columns} FROM {table.name} WHERE {where} ORDER BY id LIMIT {BATCH}"),
        {"after": after}).fetchall()
    update = d.render(f"UPDATE {table.name} SET {table.blob} = :new"
                      f" WHERE id = :id AND {table.blob} = :old")
    changed = 0
    for row in rows:
        old = bytes(row[-1])
        new = resealed(old, table.bound(row), table.named(row))
        if new is not None:
            changed += connection.execute(update, {"new": new, "id": row[0], "old": old}).rowcount
    return (rows[-1][0] if len(rows) == BATCH else None), changed


def reseal_all(connection: Any, d: Dialect, resealed: Resealed) -> int:
    """Every row of every table, on one connection (in the caller's transaction)."""
    changed = 0
    for table in TABLES:
        after = None
        while True:
            after, count = reseal_batch(connection, d, table, after, resealed)
            changed += count
            if after is None:
                break
    return changed
