"""PostgresStateStore: instances and events in PostgreSQL, shared by workers on many machines.

Async operations use a ``psycopg_pool.AsyncConnectionPool``, one per event loop
(opened on first use in that loop, so the store can be created anywhere).
``append_event`` is synchronous (``DurableBackend.publish_event`` is), and uses
one autocommit connection of its own.

Saves are group-committed: every ``save``/``save_leased`` queued on a loop
while the previous commit was in flight runs in one transaction, each in its
own savepoint (so one refused save does not undo the others), and is
committed once. Claims take rows with ``FOR UPDATE SKIP LOCKED`` and fence
them with a counter that grows at every claim; leases run on the database's
clock, so workers on machines whose clocks disagree still agree on them.

Work is announced with ``NOTIFY durable_work`` in the transaction that makes
it (a start, a publish, a save or release that ends a lease, a termination);
``wait_for_change`` listens on a dedicated connection per loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import getpass
import os
import pickle
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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

CHANNEL = "durable_work"
_MIGRATION_LOCK = 0x64757261626C65  # "durable": the advisory lock migrations hold
_MAX_BATCH = 500  # operations per group commit
_WRITE_ATTEMPTS = 5  # tries of one operation that a deadlock or serialization failure rolled back
_ROLLED_BACK = "40"  # the SQLSTATE class of both: transaction rollback
_NOW = "extract(epoch FROM statement_timestamp())::float8"  # the database's clock, in seconds

# Ordered (version, statements): a store brings the schema up to the last version.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE IF NOT EXISTS durable_instances (
            id text PRIMARY KEY,
            program text NOT NULL,
            status text NOT NULL,
            waiting_for text,
            state bytea NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            lease_owner text,
            lease_expires double precision,
            fence bigint NOT NULL DEFAULT 0,
            reason text
        )""",
        # What claim scans: unfinished instances of some programs, oldest update first.
        f"""CREATE INDEX IF NOT EXISTS durable_instances_runnable
            ON durable_instances (program, updated_at) WHERE status IN ('{RUNNING}', '{WAITING}')""",
        "CREATE INDEX IF NOT EXISTS durable_instances_by_status"
        " ON durable_instances (status, created_at)",
        "CREATE INDEX IF NOT EXISTS durable_instances_by_creation ON durable_instances (created_at)",
        """CREATE TABLE IF NOT EXISTS durable_events (
            id bigserial PRIMARY KEY,
            instance_id text NOT NULL,
            name text NOT NULL,
            payload bytea,
            published_at double precision NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS durable_events_by_instance"
        " ON durable_events (instance_id, name, id)",
    ]),
    (2, [  # durable timers
        "ALTER TABLE durable_instances ADD COLUMN IF NOT EXISTS wake_at double precision",
        "ALTER TABLE durable_instances ADD COLUMN IF NOT EXISTS waits text[]",  # every event awaited
        "ALTER TABLE durable_instances ADD COLUMN IF NOT EXISTS suspended boolean NOT NULL"
        " DEFAULT false",
        f"""CREATE INDEX IF NOT EXISTS durable_instances_by_wake
            ON durable_instances (wake_at) WHERE status = '{WAITING}'""",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

_NOTIFY = f"SELECT pg_notify('{CHANNEL}', '')"
_APPEND = f"""
    WITH added AS (
        INSERT INTO durable_events (instance_id, name, payload, published_at)
        VALUES (%s, %s, %s, {_NOW}) RETURNING id)
    SELECT id, pg_notify('{CHANNEL}', '') FROM added"""
_CREATE = f"""
    WITH added AS (
        INSERT INTO durable_instances (id, program, status, waiting_for, wake_at, waits, state,
            created_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, {_NOW}, {_NOW}) ON CONFLICT (id) DO NOTHING RETURNING id)
    SELECT id, pg_notify('{CHANNEL}', '') FROM added"""
_UPSERT = f"""
    INSERT INTO durable_instances (id, program, status, waiting_for, wake_at, waits, state,
        created_at, updated_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, {_NOW}, {_NOW})
    ON CONFLICT (id) DO UPDATE SET program = excluded.program, status = excluded.status,
        waiting_for = excluded.waiting_for, wake_at = excluded.wake_at, waits = excluded.waits,
        state = excluded.state,
        updated_at = excluded.updated_at"""
_SAVE_LEASED = f"""
    UPDATE durable_instances SET status = %(status)s, waiting_for = %(waiting_for)s,
        wake_at = %(wake_at)s, waits = %(waits)s, state = %(state)s, updated_at = {_NOW},
        lease_owner = CASE WHEN %(ends)s THEN NULL ELSE lease_owner END,
        lease_expires = CASE WHEN %(ends)s THEN NULL ELSE lease_expires END
    WHERE id = %(id)s AND fence = %(fence)s AND lease_owner = %(owner)s"""
# Runnable: running, or waiting for an event that has arrived or a time that has come (on the
# worker's clock: the runtime checks it again, so a timer never fires early); and no live lease.
_CLAIM = f"""
    WITH picked AS (
        SELECT i.id FROM durable_instances i
        WHERE i.program = ANY(%(programs)s)
          AND (i.status = '{RUNNING}' OR (i.status = '{WAITING}' AND (
                i.wake_at <= %(now)s OR EXISTS (
                SELECT 1 FROM durable_events e
                WHERE e.instance_id = i.id
                  AND (e.name = i.waiting_for OR e.name = ANY(i.waits))))))
          AND (i.lease_owner IS NULL OR i.lease_expires <= {_NOW}) AND NOT i.suspended
        ORDER BY i.updated_at
        LIMIT %(limit)s
        FOR UPDATE OF i SKIP LOCKED)
    UPDATE durable_instances u SET lease_owner = %(owner)s,
        lease_expires = {_NOW} + %(seconds)s, fence = u.fence + 1
    FROM picked WHERE u.id = picked.id
    RETURNING u.id, u.program, u.fence, u.updated_at"""
# Rows are locked in the order the group-commit writer locks them (by id, code point order):
# a renewal and a batch of saves on the same rows cannot deadlock.
_RENEW = f"""
    WITH held AS (
        SELECT u.id FROM durable_instances u
        JOIN unnest(%s::text[], %s::bigint[], %s::text[]) AS h(id, fence, owner)
          ON u.id = h.id AND u.fence = h.fence AND u.lease_owner = h.owner
        ORDER BY u.id COLLATE "C"
        FOR UPDATE OF u)
    UPDATE durable_instances u SET lease_expires = {_NOW} + %s
    FROM held WHERE u.id = held.id
    RETURNING u.id, u.fence"""
_RELEASE = f"""
    WITH released AS (
        UPDATE durable_instances SET lease_owner = NULL, lease_expires = NULL
        WHERE id = %s AND fence = %s AND lease_owner = %s RETURNING id)
    SELECT pg_notify('{CHANNEL}', '') FROM released"""

Operation = Callable[[psycopg.AsyncConnection[Any]], Awaitable[Any]]


@dataclass
class _Write:
    instance_id: str
    operation: Operation
    future: asyncio.Future[Any]
    wakes: bool


@dataclass(eq=False)
class _LoopState:
    """What a store keeps per event loop: a pool, the group-commit writer, the listener."""

    loop: asyncio.AbstractEventLoop
    pool: psycopg_pool.AsyncConnectionPool | None = None
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[_Write] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None
    listener: asyncio.Task[None] | None = None
    listen_conn: psycopg.AsyncConnection[Any] | None = None
    listening: asyncio.Lock = field(default_factory=asyncio.Lock)
    listened_before: bool = False
    generation: int = 0  # notifications received on this loop
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    marks: weakref.WeakKeyDictionary[Any, int] = field(default_factory=weakref.WeakKeyDictionary)

    def wake(self) -> None:
        self.generation += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def aclose(self) -> None:
        writer = self.writer
        if writer is not None and not writer.done():
            with contextlib.suppress(Exception):
                await writer  # queued saves are committed, not dropped
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(BaseException):
                await self.listener
        if self.listen_conn is not None:
            with contextlib.suppress(Exception):
                await self.listen_conn.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self.pool.close(timeout=5)

    def abandon(self) -> None:
        """This state's loop is gone: close its sockets without it."""
        connections: list[Any] = [self.listen_conn]
        if self.pool is not None:
            connections += list(getattr(self.pool, "_pool", ()))
        for connection in connections:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.pgconn.finish()


class PostgresStateStore(InstanceStore):
    """Instances, their leases and their events in one PostgreSQL database."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10,
                 connect_timeout: float = 5.0, pool_timeout: float = 30.0) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error as error:
            raise StoreError(f"invalid PostgreSQL connection string: "
                             f"{_hide_fragments(str(error), dsn)}") from None
        self.dsn = dsn  # as given (with any password): repr() and errors never show it
        self._password = str(params.get("password") or "")
        self.where = _describe(params)
        self._repr = f"PostgresStateStore({_safe_url(params)!r})"
        self.conninfo = dsn if "connect_timeout" in params else make_conninfo(
            dsn, connect_timeout=max(1, round(connect_timeout)))
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self.commits = 0  # transactions the group-commit writer committed (< saves under load)
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._sync_lock = threading.Lock()
        self._sync_conn: psycopg.Connection[Any] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return self._repr

    # --- the seed interface ----------------------------------------------------------------------
    async def load(self, instance_id: str) -> State | None:
        async with self._connection() as conn:
            row = await (await conn.execute(
                "SELECT state FROM durable_instances WHERE id = %s", (_text(instance_id),))).fetchone()
        return None if row is None else pickle.loads(row[0])

    async def save(self, instance_id: str, state: State) -> None:
        params = _row(instance_id, state)
        done = consumed(state)

        async def upsert(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(_UPSERT, params)
            await _delete_events(conn, params[0], done)
        await self._write(instance_id, upsert, wakes=_ends_run(state))

    # --- events ----------------------------------------------------------------------------------
    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        self._ensure_schema()
        with self._sync_lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            conn = self._sync_conn
            if conn is None or conn.closed or conn.broken:
                conn = self._sync_conn = self._connect_sync()
            with self._translate():
                row = conn.execute(_APPEND, (_text(instance_id), _text(event), payload)).fetchone()
        assert row is not None
        return str(row[0])

    async def publish(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        async with self._connection() as conn:
            row = await (await conn.execute(
                _APPEND, (_text(instance_id), _text(event), payload))).fetchone()
        assert row is not None
        return str(row[0])

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        async with self._connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, name FROM durable_events WHERE instance_id = %s ORDER BY id",
                (_text(instance_id),))).fetchall()
        return [(str(event_id), _untext(name)) for event_id, name in rows]

    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        async with self._connection() as conn:
            row = await (await conn.execute(
                "SELECT payload FROM durable_events WHERE instance_id = %s AND id = %s",
                (_text(instance_id), int(event_id)))).fetchone()
        return None if row is None else row[0]

    # --- instances -------------------------------------------------------------------------------
    async def create(self, instance_id: str, state: State) -> bool:
        params = _row(instance_id, state)
        async with self._connection() as conn:
            row = await (await conn.execute(_CREATE, params)).fetchone()
        return row is not None

    async def claim(self, owner: str, programs: Collection[str], limit: int,
                    lease_seconds: float, now: float | None = None) -> list[Lease]:
        programs = builtins.list(programs)
        if not programs or limit <= 0:
            return []
        # Listen before looking: whatever changes after this claim's snapshot wakes the worker.
        await self._listen(self._loop_state())
        async with self._connection() as conn:
            rows = await (await conn.execute(_CLAIM, {
                "programs": [_text(program) for program in programs], "limit": limit,
                "owner": _text(owner), "now": time.time() if now is None else now,
                "seconds": float(lease_seconds)})).fetchall()
        rows.sort(key=lambda row: (row[3], row[0]))
        return [Lease(_untext(instance_id), _untext(program), fence, owner)
                for instance_id, program, fence, _ in rows]

    async def next_wake(self, programs: Collection[str]) -> float | None:
        async with self._connection() as conn:
            row = await (await conn.execute(
                f"SELECT min(wake_at) FROM durable_instances WHERE status = '{WAITING}'"
                " AND wake_at IS NOT NULL AND program = ANY(%s)",
                ([_text(program) for program in programs],))).fetchone()
        return None if row is None else row[0]

    async def renew(self, leases: Collection[Lease], lease_seconds: float) -> builtins.list[Lease]:
        leases = builtins.list(leases)
        if not leases:
            return []
        async with self._connection() as conn:
            rows = await (await conn.execute(_RENEW, (
                [_text(lease.instance_id) for lease in leases], [lease.token for lease in leases],
                [_text(lease.owner) for lease in leases], float(lease_seconds)))
            ).fetchall()
        held = {(_untext(instance_id), fence) for instance_id, fence in rows}
        return [lease for lease in leases if (lease.instance_id, lease.token) not in held]

    async def save_leased(self, lease: Lease, state: State) -> None:
        ends = _ends_run(state)
        params = {"status": status_of(state), "waiting_for": _text(state.get("waiting_for")),
                  "wake_at": state.get("wake_at"), "waits": _waits(state), "state": _dump(state), "ends": ends, "id": _text(lease.instance_id),
                  "fence": lease.token, "owner": _text(lease.owner)}
        done = consumed(state)

        async def update(conn: psycopg.AsyncConnection[Any]) -> None:
            cursor = await conn.execute(_SAVE_LEASED, params)
            if cursor.rowcount == 0:
                raise LeaseLost(lease.instance_id, lease.token)
            await _delete_events(conn, params["id"], done)
        await self._write(lease.instance_id, update, wakes=ends)

    async def release(self, lease: Lease) -> None:
        async with self._connection() as conn:
            await conn.execute(_RELEASE, (_text(lease.instance_id), lease.token, _text(lease.owner)))

    async def info(self, instance_id: str) -> InstanceInfo | None:
        async with self._connection() as conn:
            row = await (await conn.execute(
                f"SELECT {INFO_COLUMNS} FROM durable_instances WHERE id = %s",
                (_text(instance_id),))).fetchone()
        return None if row is None else _info(row)

    async def list(self, status: str | None = None, limit: int = 1000) -> builtins.list[InstanceInfo]:
        where, args = ((f"WHERE {SHOWN_STATUS} = %s", (status,)) if status is not None
                       else ("", ()))
        async with self._connection() as conn:
            rows = await (await conn.execute(
                f"SELECT {INFO_COLUMNS} FROM durable_instances {where}"
                " ORDER BY created_at DESC, id LIMIT %s", (*args, limit))).fetchall()
        return [_info(row) for row in rows]

    async def suspend(self, instance_id: str) -> bool:
        return await self._set_suspended(instance_id, True)

    async def resume(self, instance_id: str) -> bool:
        return await self._set_suspended(instance_id, False)

    async def _set_suspended(self, instance_id: str, suspended: bool) -> bool:
        async with self._connection() as conn, conn.transaction():
            exists = await (await conn.execute(
                "SELECT 1 FROM durable_instances WHERE id = %s", (_text(instance_id),))).fetchone()
            if exists is None:
                raise UnknownInstanceError(instance_id, self.where)
            cursor = await conn.execute(
                f"UPDATE durable_instances SET suspended = %s WHERE id = %s AND suspended != %s"
                f" AND status IN ('{RUNNING}', '{WAITING}')",
                (suspended, _text(instance_id), suspended))
            if cursor.rowcount and not suspended:
                await conn.execute(_NOTIFY)
        return cursor.rowcount == 1

    async def terminate(self, instance_id: str, reason: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            row = await (await conn.execute(
                "SELECT state, status FROM durable_instances WHERE id = %s FOR UPDATE",
                (_text(instance_id),))).fetchone()
            if row is None:
                raise UnknownInstanceError(instance_id, self.where)
            if row[1] in ENDED:
                return False
            state = terminated(pickle.loads(row[0]), reason)
            await conn.execute(
                "UPDATE durable_instances SET status = %s, waiting_for = NULL, wake_at = NULL,"
                " waits = NULL,"
                " state = %s,"
                f" reason = %s, updated_at = {_NOW}, fence = fence + 1, lease_owner = NULL,"
                " lease_expires = NULL WHERE id = %s",
                (status_of(state), _dump(state), _text(reason), _text(instance_id)))
            await conn.execute("DELETE FROM durable_events WHERE instance_id = %s",
                               (_text(instance_id),))
            await conn.execute(_NOTIFY)
        return True

    async def wait_for_change(self, timeout: float) -> None:
        """Return at the first notification since this task last returned, or at timeout.

        Each task remembers the last notification it returned for, so one that
        arrives between two calls makes the next call return at once.
        """
        state = self._loop_state()
        await self._listen(state)
        task = asyncio.current_task()
        if state.generation == state.marks.get(task, 0) and timeout > 0:
            await wait_set(state.changed, timeout)
        state.marks[task] = state.generation

    async def close(self) -> None:
        self._closed = True
        current = asyncio.get_running_loop()
        with self._lock:
            states = builtins.list(self._loops.values())
            self._loops.clear()
        for state in states:
            if state.loop is current:
                await state.aclose()
            elif not state.loop.is_closed() and state.loop.is_running():
                try:
                    done = asyncio.run_coroutine_threadsafe(state.aclose(), state.loop)
                    await asyncio.wait_for(asyncio.wrap_future(done), 10)
                except Exception:
                    state.abandon()
            else:
                state.abandon()
        with self._sync_lock:
            if self._sync_conn is not None:
                self._sync_conn.close()
                self._sync_conn = None

    # --- connections -----------------------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                for gone in [other for other in self._loops if other.is_closed()]:
                    self._loops.pop(gone).abandon()
                state = self._loops[loop] = _LoopState(loop)
        return state

    async def _pool(self, state: _LoopState) -> psycopg_pool.AsyncConnectionPool:
        if state.pool is not None:
            return state.pool
        async with state.opening:
            if state.pool is None:
                if not self._schema_ready:
                    await asyncio.to_thread(self._ensure_schema)
                pool = psycopg_pool.AsyncConnectionPool(
                    self.conninfo, min_size=self.min_size, max_size=self.max_size, open=False,
                    kwargs={"autocommit": True}, timeout=self.pool_timeout,
                    reconnect_timeout=max(self.pool_timeout, 2 * self.connect_timeout),
                    name=f"durable {self.where}")
                try:
                    await pool.open(wait=True, timeout=2 * self.connect_timeout + 1)
                except psycopg_pool.PoolTimeout as error:
                    with contextlib.suppress(Exception):
                        await pool.close(timeout=1)
                    raise StoreError(f"cannot connect to {self.where}: "
                                     f"{self._clean(error)}") from None
                state.pool = pool
        return state.pool

    @asynccontextmanager
    async def _connection(self) -> Any:
        pool = await self._pool(self._loop_state())
        with self._translate():
            async with pool.connection() as conn:
                yield conn

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """Connection trouble becomes a StoreError naming the database (never its password)."""
        try:
            yield
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as error:
            raise StoreError(f"{self.where}: {self._clean(error)}") from error

    def _clean(self, error: BaseException) -> str:
        text = str(error).strip() or type(error).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return re.sub(r"\s+", " ", text)

    def _connect_sync(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.Connection.connect(self.conninfo, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to {self.where}: {self._clean(error)}") from None

    async def _connect_async(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to {self.where}: {self._clean(error)}") from None

    def _ensure_schema(self) -> None:
        """Create or migrate the tables once per store; concurrent openers take turns."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._connect_sync() as conn:
                try:
                    _migrate(conn)
                except psycopg.Error as error:
                    raise StoreError(f"cannot prepare the schema in {self.where}: "
                                     f"{self._clean(error)}") from None
            self._schema_ready = True

    # --- notifications ---------------------------------------------------------------------------
    async def _listen(self, state: _LoopState) -> None:
        if state.listener is not None and not state.listener.done():
            return
        async with state.listening:
            if state.listener is not None and not state.listener.done():
                return
            if not self._schema_ready:
                await self._pool(state)
            conn = await self._connect_async()
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
            except BaseException:
                await conn.close()
                raise
            state.listen_conn = conn
            state.listener = state.loop.create_task(self._receive(state, conn))
            if state.listened_before:  # a listener died: what it missed may be work
                state.wake()
            state.listened_before = True

    async def _receive(self, state: _LoopState, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for _notify in conn.notifies():
                state.wake()
        except psycopg.Error:
            pass  # the connection was lost; the next wait_for_change listens again
        finally:
            if state.listen_conn is conn:
                state.listen_conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            state.wake()

    # --- the group-commit writer -----------------------------------------------------------------
    async def _write(self, instance_id: str, operation: Operation, wakes: bool) -> Any:
        state = self._loop_state()
        future = state.loop.create_future()
        future.add_done_callback(_retrieve)  # its caller may be gone (cancelled): no warning
        state.pending.append(_Write(instance_id, operation, future, wakes))
        if state.writer is None or state.writer.done():
            state.writer = state.loop.create_task(self._write_loop(state))
        return await asyncio.shield(future)

    async def _write_loop(self, state: _LoopState) -> None:
        while state.pending:
            batch, state.pending = state.pending[:_MAX_BATCH], state.pending[_MAX_BATCH:]
            try:
                await self._commit(state, batch)
            except BaseException:
                batch += state.pending
                state.pending = []
                raise
            finally:
                for write in batch:  # cancelled midway: nobody waits forever
                    if not write.future.done():
                        write.future.set_exception(StoreError(
                            f"{self.where}: the store was closed before this save committed"))

    async def _commit(self, state: _LoopState, batch: builtins.list[_Write]) -> None:
        """Run a batch in one transaction, each operation in its own savepoint; commit once."""
        # The same order of row locks in every batch: two writers cannot deadlock each other.
        batch = sorted(batch, key=lambda write: write.instance_id)
        outcomes: builtins.list[tuple[bool, Any]] = []
        try:
            pool = await self._pool(state)
            with self._translate():
                async with pool.connection() as conn, conn.transaction():
                    for write in batch:
                        outcomes.append(await self._run_write(conn, write))
                    if any(ok and write.wakes for (ok, _), write in zip(outcomes, batch, strict=True)):
                        await conn.execute(_NOTIFY)
            self.commits += 1
        except Exception as error:
            failure = error if isinstance(error, StoreError) else StoreError(
                f"{self.where}: the transaction failed, nothing of it was saved: "
                f"{self._clean(error)}")
            outcomes = [(False, failure)] * len(batch)
        for (ok, value), write in zip(outcomes, batch, strict=True):
            if write.future.done():
                continue
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    async def _run_write(self, conn: psycopg.AsyncConnection[Any], write: _Write) -> tuple[bool, Any]:
        """One operation in its own savepoint. A deadlock or serialization failure rolls back
        only the savepoint, so the operation runs again; other database errors become
        StoreErrors (the caller gives the instance back, it is not the program's fault)."""
        for _ in range(_WRITE_ATTEMPTS):
            try:
                async with conn.transaction():
                    return True, await write.operation(conn)
            except psycopg.Error as error:
                failure = error
                if not (error.sqlstate or "").startswith(_ROLLED_BACK):
                    break
                # A deadlock's victim or a serialization failure: only the savepoint was rolled
                # back, run it again.
            except Exception as error:
                return False, error
        return False, StoreError(f"{self.where}: {self._clean(failure)}")


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _migrate(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS durable_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM durable_schema").fetchone()
        version = 0 if row is None else row[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"the database has durable schema version {version}; this version "
                             f"of durable knows up to {SCHEMA_VERSION}")
        for step, statements in MIGRATIONS:
            if step > version:
                for statement in statements:
                    conn.execute(statement)
        if row is None:
            conn.execute("INSERT INTO durable_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            conn.execute("UPDATE durable_schema SET version = %s", (SCHEMA_VERSION,))


async def _delete_events(conn: psycopg.AsyncConnection[Any], instance_id: str,
                         event_ids: set[str]) -> None:
    ids = [int(event_id) for event_id in event_ids if event_id.isdigit()]
    if ids:
        await conn.execute("DELETE FROM durable_events WHERE instance_id = %s AND id = ANY(%s)",
                           (instance_id, ids))


def _row(instance_id: str, state: State) -> tuple[Any, ...]:
    """The columns a saved state sets: id, program, status, waiting_for, wake_at, waits, state."""
    return (_text(instance_id), _text(state.get("program", "")), status_of(state),
            _text(state.get("waiting_for")), state.get("wake_at"), _waits(state), _dump(state))


def _waits(state: State) -> list[str] | None:
    events = state.get("waiting_events")
    return [_text(event) for event in events] if events else None


def _info(row: tuple[Any, ...]) -> InstanceInfo:
    instance_id, program, status, waiting_for, created, updated, reason, owner, wake_at = row
    return InstanceInfo(_untext(instance_id), _untext(program), status, _untext(waiting_for),
                        created, updated, _untext(reason), _untext(owner), wake_at)


# PostgreSQL text cannot hold NUL. Names with one (or starting with the mark) are stored marked,
# with NUL and the mark escaped; every other name is stored as it is.
_MARK = "\x01"
_ESCAPED = re.compile("\x01(.)", re.DOTALL)


def _text(name: str | None) -> str | None:
    if name is None or ("\x00" not in name and not name.startswith(_MARK)):
        return name
    return _MARK + name.replace(_MARK, _MARK + "\x02").replace("\x00", _MARK + _MARK)


def _untext(stored: Any) -> Any:
    if not isinstance(stored, str) or not stored.startswith(_MARK):
        return stored
    return _ESCAPED.sub(lambda match: "\x00" if match[1] == _MARK else _MARK, stored[1:])


def _ends_run(state: State) -> bool:
    """A save that is not of a running instance ends its lease (and may be what a client awaits)."""
    return status_of(state) != RUNNING


def _dump(state: State) -> bytes:
    return pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


def _describe(params: dict[str, Any]) -> str:
    """'PostgreSQL database 'x' at host:port', from the connection parameters and libpq's defaults."""
    host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST")
               or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    database = (params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
                or os.environ.get("PGUSER") or _login())
    return f"PostgreSQL database {database!r} at {host}:{port}"


def _safe_url(params: dict[str, Any]) -> str:
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port")
    netloc = (f"{user}@" if user else "") + str(host) + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{params.get('dbname') or ''}"


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "?"


def _hide_fragments(message: str, dsn: str) -> str:
    """psycopg quotes the part of a bad connection string it stumbled on; it may hold a password."""
    message = message.strip()
    if message.startswith("invalid connection option"):
        return message  # the quoted part is an option's name
    def hide(match: re.Match[str]) -> str:
        return '"…"' if len(match[1]) > 1 and match[1] in dsn else match[0]
    return re.sub(r'"([^"]*)"', hide, message)
