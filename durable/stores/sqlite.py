"""SqliteStateStore: the embedded default. One file, many processes on one machine.

WAL journal and ``synchronous=FULL``: a save that returned is on disk, and
readers never block the writer. Every write (a save, a claim, a publish) is
an operation handed to one writer thread per store; the writer runs all the
operations queued while the previous commit was syncing in one transaction,
each in its own savepoint, and commits once (group commit): a hundred
instances checkpointing at once cost one fsync, not a hundred. Other
processes take turns through SQLite's own lock (``BEGIN IMMEDIATE`` with a
busy timeout).

Workers in other processes notice new work by polling ``PRAGMA
data_version`` (cheap: no disk read); work made in this process wakes them
at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pickle
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import LeaseLost, StoreError, UnknownInstanceError
from ..waiting import wait_set
from .base import (
    ENDED,
    INFO_COLUMNS,
    RUNNING,
    SHOWN_STATUS,
    WAITING,
    InstanceInfo,
    InstanceStore,
    Lease,
    State,
    consumed,
    status_of,
    terminated,
)

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]

MIGRATIONS: list[list[str]] = [
    [  # version 1
        """CREATE TABLE durable_instances (
            id TEXT PRIMARY KEY,
            program TEXT NOT NULL,
            status TEXT NOT NULL,
            waiting_for TEXT,
            state BLOB NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            lease_owner TEXT,
            lease_expires REAL,
            fence INTEGER NOT NULL DEFAULT 0,
            reason TEXT
        )""",
        "CREATE INDEX durable_instances_by_status ON durable_instances (status, program)",
        "CREATE INDEX durable_instances_by_creation ON durable_instances (created_at)",
        """CREATE TABLE durable_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id TEXT NOT NULL,
            name TEXT NOT NULL,
            payload BLOB,
            published_at REAL NOT NULL
        )""",
        "CREATE INDEX durable_events_by_instance ON durable_events (instance_id, name)",
    ],
    [  # version 2: durable timers
        "ALTER TABLE durable_instances ADD COLUMN wake_at REAL",
        "ALTER TABLE durable_instances ADD COLUMN waits TEXT",  # JSON: every event waited for
        "ALTER TABLE durable_instances ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX durable_instances_by_wake ON durable_instances (status, wake_at)",
    ],
]

# Runnable: running, or waiting for an event that has arrived or a time that has come; and no
# live lease on it. Parameters: the timers' now, the leases' now.
_RUNNABLE = f"""
    (i.status = '{RUNNING}' OR (i.status = '{WAITING}' AND (i.wake_at <= ? OR EXISTS (
        SELECT 1 FROM durable_events e WHERE e.instance_id = i.id AND (e.name = i.waiting_for
            OR e.name IN (SELECT value FROM json_each(coalesce(i.waits, '[]'))))))))
    AND (i.lease_owner IS NULL OR i.lease_expires < ?) AND NOT i.suspended
"""
_STOP = object()


class SqliteStateStore(InstanceStore):
    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 busy_timeout: float = 30.0, poll_interval: float = 0.01) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._writes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._generation = 0  # changes made through this store object
        self._changes: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._marks: weakref.WeakKeyDictionary[Any, tuple[int, int]] = weakref.WeakKeyDictionary()
        self._closed = False
        self.commits = 0  # transactions the writer committed: group commit makes it < saves
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._reader() as connection:
            _migrate(connection)
        self._watch = self._connect()
        self._initial_mark = (0, self._data_version())

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    # --- the seed interface ----------------------------------------------------------------------
    async def load(self, instance_id: str) -> State | None:
        row = await self._read(lambda c: c.execute(
            "SELECT state FROM durable_instances WHERE id = ?", (instance_id,)).fetchone())
        return None if row is None else pickle.loads(row[0])

    async def save(self, instance_id: str, state: State) -> None:
        await self._write(lambda c: _upsert(c, instance_id, state), wakes=_ends_run(state))

    # --- events ----------------------------------------------------------------------------------
    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        return self._submit(lambda c: _append(c, instance_id, event, payload), wakes=True).result()

    async def publish(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        return await self._write(lambda c: _append(c, instance_id, event, payload), wakes=True)

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        rows = await self._read(lambda c: c.execute(
            "SELECT id, name FROM durable_events WHERE instance_id = ? ORDER BY id",
            (instance_id,)).fetchall())
        return [(str(event_id), name) for event_id, name in rows]

    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        row = await self._read(lambda c: c.execute(
            "SELECT payload FROM durable_events WHERE instance_id = ? AND id = ?",
            (instance_id, int(event_id))).fetchone())
        return None if row is None else row[0]

    # --- instances -------------------------------------------------------------------------------
    async def create(self, instance_id: str, state: State) -> bool:
        def insert(c: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = c.execute(
                "INSERT INTO durable_instances (id, program, status, waiting_for, wake_at, waits,"
                " state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (instance_id, state["program"], status_of(state), state.get("waiting_for"),
                 state.get("wake_at"), _waits(state), _dump(state), now, now))
            return cursor.rowcount == 1
        return await self._write(insert, wakes=True)

    async def claim(self, owner: str, programs: Collection[str], limit: int,
                    lease_seconds: float, now: float | None = None) -> list[Lease]:
        programs = list(programs)
        if not programs or limit <= 0:
            return []
        marks = ", ".join("?" * len(programs))
        query = (f"SELECT i.id FROM durable_instances i WHERE i.program IN ({marks}) AND {_RUNNABLE}"
                 " ORDER BY i.updated_at LIMIT ?")

        def runnable(c: sqlite3.Connection) -> list[Any]:
            timers = time.time() if now is None else now
            return c.execute(query, (*programs, timers, time.time(), limit)).fetchall()

        if not await self._read(runnable):  # the common case costs no write transaction
            return []

        def take(c: sqlite3.Connection) -> list[Lease]:
            now = time.time()
            leases = []
            for (instance_id,) in runnable(c):
                program, token = c.execute(
                    "UPDATE durable_instances SET lease_owner = ?, lease_expires = ?, fence = fence + 1"
                    " WHERE id = ? RETURNING program, fence",
                    (owner, now + lease_seconds, instance_id)).fetchone()
                leases.append(Lease(instance_id, program, token, owner))
            return leases
        return await self._write(take)

    async def next_wake(self, programs: Collection[str]) -> float | None:
        programs = list(programs)
        marks = ", ".join("?" * len(programs))
        row = await self._read(lambda c: c.execute(
            f"SELECT min(wake_at) FROM durable_instances WHERE status = '{WAITING}'"
            f" AND wake_at IS NOT NULL AND program IN ({marks})", programs).fetchone())
        return row[0]

    async def renew(self, leases: Collection[Lease], lease_seconds: float) -> list[Lease]:
        def extend(c: sqlite3.Connection) -> list[Lease]:
            until = time.time() + lease_seconds
            return [lease for lease in leases if c.execute(
                "UPDATE durable_instances SET lease_expires = ? WHERE id = ? AND fence = ?"
                " AND lease_owner = ?", (until, *_held(lease))).rowcount == 0]
        return await self._write(extend) if leases else []

    async def save_leased(self, lease: Lease, state: State) -> None:
        def save(c: sqlite3.Connection) -> None:
            ends = _ends_run(state)
            cursor = c.execute(
                "UPDATE durable_instances SET status = ?, waiting_for = ?, wake_at = ?, waits = ?,"
                " state = ?, updated_at = ?, lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END,"
                " lease_expires = CASE WHEN ? THEN NULL ELSE lease_expires END"
                " WHERE id = ? AND fence = ? AND lease_owner = ?",
                (status_of(state), state.get("waiting_for"), state.get("wake_at"), _waits(state),
                 _dump(state),
                 time.time(), ends, ends, *_held(lease)))
            if cursor.rowcount == 0:
                raise LeaseLost(lease.instance_id, lease.token)
            _delete_events(c, lease.instance_id, consumed(state))
        await self._write(save, wakes=_ends_run(state))

    async def release(self, lease: Lease) -> None:
        await self._write(lambda c: c.execute(
            "UPDATE durable_instances SET lease_owner = NULL, lease_expires = NULL"
            " WHERE id = ? AND fence = ? AND lease_owner = ?", _held(lease)), wakes=True)

    async def info(self, instance_id: str) -> InstanceInfo | None:
        row = await self._read(lambda c: c.execute(
            f"SELECT {INFO_COLUMNS} FROM durable_instances WHERE id = ?", (instance_id,)).fetchone())
        return None if row is None else InstanceInfo(*row)

    async def list(self, status: str | None = None, limit: int = 1000) -> list[InstanceInfo]:
        where, args = (f"WHERE {SHOWN_STATUS} = ?", (status,)) if status is not None else ("", ())
        rows = await self._read(lambda c: c.execute(
            f"SELECT {INFO_COLUMNS} FROM durable_instances {where}"
            " ORDER BY created_at DESC, id LIMIT ?", (*args, limit)).fetchall())
        return [InstanceInfo(*row) for row in rows]

    async def terminate(self, instance_id: str, reason: str) -> bool:
        def stop(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT state, status FROM durable_instances WHERE id = ?",
                            (instance_id,)).fetchone()
            if row is None:
                raise UnknownInstanceError(instance_id, repr(self))
            if row[1] in ENDED:
                return False
            state = terminated(pickle.loads(row[0]), reason)
            c.execute(
                "UPDATE durable_instances SET status = ?, waiting_for = NULL, wake_at = NULL,"
                " waits = NULL,"
                " state = ?, reason = ?,"
                " updated_at = ?, fence = fence + 1, lease_owner = NULL, lease_expires = NULL"
                " WHERE id = ?", (status_of(state), _dump(state), reason, time.time(), instance_id))
            c.execute("DELETE FROM durable_events WHERE instance_id = ?", (instance_id,))
            return True
        return await self._write(stop, wakes=True)

    async def suspend(self, instance_id: str) -> bool:
        return await self._set_suspended(instance_id, True)

    async def resume(self, instance_id: str) -> bool:
        return await self._set_suspended(instance_id, False)

    async def _set_suspended(self, instance_id: str, suspended: bool) -> bool:
        def update(c: sqlite3.Connection) -> bool:
            if c.execute("SELECT 1 FROM durable_instances WHERE id = ?", (instance_id,)).fetchone() \
                    is None:
                raise UnknownInstanceError(instance_id, repr(self))
            return c.execute(
                f"UPDATE durable_instances SET suspended = ? WHERE id = ? AND suspended != ?"
                f" AND status IN ('{RUNNING}', '{WAITING}')",
                (suspended, instance_id, suspended)).rowcount == 1
        return await self._write(update, wakes=not suspended)

    async def wait_for_change(self, timeout: float) -> None:
        """Each task sees each change once: it remembers the last one it returned for."""
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            mark = (self._generation, self._data_version())
            left = deadline - time.monotonic()
            if mark != self._marks.get(task, self._initial_mark) or left <= 0:
                self._marks[task] = mark
                return
            changed = self._changes.setdefault(loop, asyncio.Event())
            await wait_set(changed, min(left, self.poll_interval))

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writes.put(_STOP)
            await asyncio.to_thread(self._writer.join)
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
            self._readers.clear()

    # --- connections ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {error}") from error
        with self._lock:
            self._all.append(connection)
        return connection

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._readers.pop() if self._readers else None
        connection = connection or self._connect()
        try:
            yield connection
        finally:
            with self._lock:
                self._readers.append(connection)

    async def _read(self, query: Operation[T]) -> T:
        def run() -> T:
            with self._reader() as connection:
                return query(connection)
        return await asyncio.to_thread(run)

    def _data_version(self) -> int:
        """Changes when any other connection (other processes, our writer) commits."""
        with self._lock:
            return self._watch.execute("PRAGMA data_version").fetchone()[0]

    # --- the writer ------------------------------------------------------------------------------
    async def _write(self, operation: Operation[T], wakes: bool = False) -> T:
        return await asyncio.wrap_future(self._submit(operation, wakes))

    def _submit(self, operation: Operation[T], wakes: bool) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._writes.put((operation, future, wakes))
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name=f"durable {self!r}",
                                                    daemon=True)
                    self._writer.start()
        return future

    def _write_loop(self) -> None:
        connection = self._connect()
        while True:
            batch = [self._writes.get()]
            while len(batch) < 1000:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(connection, batch)
            if stop:
                return

    def _commit(self, connection: sqlite3.Connection, batch: list[Any]) -> None:
        """Run a batch in one transaction, each operation in its own savepoint; commit once."""
        outcomes: list[tuple[bool, Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for operation, _future, _wakes in batch:
                connection.execute("SAVEPOINT operation")
                try:
                    outcomes.append((True, operation(connection)))
                    connection.execute("RELEASE operation")
                except Exception as error:
                    connection.execute("ROLLBACK TO operation")
                    connection.execute("RELEASE operation")
                    outcomes.append((False, error))
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            failure = StoreError(f"{self!r}: the transaction failed, nothing of it was saved: {error}")
            outcomes = [(False, failure)] * len(batch)
        self.commits += 1
        for (ok, value), (_operation, future, _wakes) in zip(outcomes, batch, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if any(wakes for _operation, _future, wakes in batch):
            self._wake()

    def _wake(self) -> None:
        self._generation += 1
        for loop in list(self._changes):
            try:
                loop.call_soon_threadsafe(self._fire, loop)
            except RuntimeError:  # that loop is closed
                self._changes.pop(loop, None)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        changed = self._changes.pop(loop, None)
        if changed is not None:
            changed.set()

def _migrate(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS durable_schema (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM durable_schema").fetchone()
        version = 0 if row is None else row[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"the SQLite store has schema version {version}; this version of "
                             f"durable knows up to {len(MIGRATIONS)}")
        for step in MIGRATIONS[version:]:
            for statement in step:
                connection.execute(statement)
        if row is None:
            connection.execute("INSERT INTO durable_schema (version) VALUES (?)", (len(MIGRATIONS),))
        else:
            connection.execute("UPDATE durable_schema SET version = ?", (len(MIGRATIONS),))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _upsert(c: sqlite3.Connection, instance_id: str, state: State) -> None:
    now = time.time()
    c.execute(
        "INSERT INTO durable_instances (id, program, status, waiting_for, wake_at, waits, state,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        " program = excluded.program, status = excluded.status, waiting_for = excluded.waiting_for,"
        " wake_at = excluded.wake_at, waits = excluded.waits, state = excluded.state,"
        " updated_at = excluded.updated_at",
        (instance_id, state.get("program", ""), status_of(state), state.get("waiting_for"),
         state.get("wake_at"), _waits(state), _dump(state), now, now))
    _delete_events(c, instance_id, consumed(state))


def _append(c: sqlite3.Connection, instance_id: str, event: str, payload: bytes | None) -> str:
    cursor = c.execute(
        "INSERT INTO durable_events (instance_id, name, payload, published_at) VALUES (?, ?, ?, ?)",
        (instance_id, event, payload, time.time()))
    return str(cursor.lastrowid)


def _delete_events(c: sqlite3.Connection, instance_id: str, event_ids: set[str]) -> None:
    if event_ids:
        c.executemany("DELETE FROM durable_events WHERE instance_id = ? AND id = ?",
                      [(instance_id, int(event_id)) for event_id in event_ids])


def _held(lease: Lease) -> tuple[str, int, str]:
    return lease.instance_id, lease.token, lease.owner


def _ends_run(state: State) -> bool:
    """A save that is not of a running instance ends its lease (and may be what a client awaits)."""
    return status_of(state) != RUNNING


def _waits(state: State) -> str | None:
    events = state.get("waiting_events")
    return json.dumps(events) if events else None


def _dump(state: State) -> bytes:
    return pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
