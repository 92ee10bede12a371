"""SqlStore: the InstanceStore of every SQL database, written once.

Claims, leases and their fencing, saves that consume events, termination,
suspension, listing and waiting for changes are implemented here, once, on a
DB-API connection and a ``Dialect``. A database module (``sqlite.py``,
``postgres.py``) adds only what is its own: its dialect, how to connect, and
how this process learns that another one changed the store.

Every write goes through one ``GroupCommitWriter`` thread; reads run on a few
reader threads of the store's own (``Readers``), each with its own connection,
so nothing here belongs to an event loop: one store serves any loop or thread.
A connection that raised a database error is closed and replaced on next use.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import json
import re
import threading
import weakref
from abc import abstractmethod
from collections.abc import Callable, Collection
from typing import Any, ClassVar, TypeVar

from ... import history
from ...errors import IncompatibleStateError, LeaseLost, StoreError, UnknownInstanceError
from ...ids import check_instance_id
from ...waiting import wait_set
from ..base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_STATE_BYTES,
    ENDED,
    FAILED,
    RUNNING,
    HistoryEntry,
    InstanceInfo,
    InstanceStore,
    Lease,
    State,
    consumed,
    receivable,
    same_start,
    start_digest,
    status_of,
    terminated,
)
from ..blobs import Blobs, Resigned, Stored
from ..sealing import Keyring
from .connections import Connection, Operation, close_quietly
from .dialect import Dialect
from .readers import Readers
from .replies import ToLoop, ToThread
from .resealing import TABLES, reseal_batch
from .schema import migrate
from .statements import Statements
from .writer import GroupCommitWriter, Write

T = TypeVar("T")


@functools.cache
def statements(dialect: Dialect) -> Statements:
    return Statements(dialect)


class SqlStore(Blobs, InstanceStore):
    dialect: ClassVar[Dialect]

    def __init__(self, where: str, *, readers: int, keys: Keyring,
                 max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        """``where`` names the database in messages (never with a password)."""
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        self._set_blobs(max_state_bytes, max_payload_bytes, keys)
        self._where = where
        self.sql = statements(self.dialect)
        self._writer = GroupCommitWriter(where, self.dialect, self._open, self._failure,
                                         self._committed)
        self._readers = Readers(readers, where, self._open, self.dialect.errors, self._failure)
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        # Waiting for changes: a count of changes seen by this process, and per event loop the
        # event its waiters wait on; each task remembers the last change it returned for.
        self._changes_seen = itertools.count(1)
        self._generation = 0
        self._waiters: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._marks: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._watching = False
        self._watch_lock = threading.Lock()

    @property
    def where(self) -> str:
        return self._where

    @property
    def commits(self) -> int:
        """Transactions the writer committed: group commit makes them fewer than saves."""
        return self._writer.commits

    # --- what a database module provides --------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Connection:
        """A new connection in autocommit mode (``SqlStore`` begins its transactions)."""

    def _start_watching(self) -> None:
        """Begin noticing changes other processes make, and call ``_wake`` for each. Runs
        once, in a thread, before the first claim or wait."""

    def _stop_watching(self) -> None:
        """At close (in a thread): stop noticing other processes' changes."""

    def _clean(self, text: str) -> str:
        """A message with any secret of the connection string hidden."""
        return text

    # --- the seed interface ----------------------------------------------------------------------
    async def load(self, instance_id: str) -> State | None:
        row = await self._query(lambda c: self.dialect.read_blobs(
            c, self.sql.load, {"id": instance_id}).fetchone())
        return None if row is None else self._state_of(instance_id, row[0])

    async def save(self, instance_id: str, state: State) -> None:
        columns = {**self._columns(instance_id, state), "start_digest": None}
        done = self._consumed(state)
        entries = self._entries(instance_id, state)

        def upsert(c: Connection) -> None:
            if (c.execute(self.sql.save, columns).rowcount == 0
                    and c.execute(self.sql.create, columns).rowcount == 0):
                c.execute(self.sql.save, columns)  # another transaction created it meanwhile
            self._consume(c, instance_id, done)
            self._add_entries(c, instance_id, *entries)
        await self._write(instance_id, upsert, wakes=_ends_run(state))

    # --- events ----------------------------------------------------------------------------------
    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        reply = ToThread()
        self._writer.submit(Write(instance_id, self._publish(instance_id, event, payload), reply,
                                  wakes=True, atomic=False))
        return reply.future.result()

    async def publish(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        return await self._write(instance_id, self._publish(instance_id, event, payload),
                                 wakes=True)

    def _publish(self, instance_id: str, event: str, payload: bytes | None) -> Operation[str]:
        check_instance_id(instance_id)
        params = {"id": instance_id, "name": event,
                  "payload": self._payload_blob(instance_id, event, payload)}

        def insert(c: Connection) -> str:
            row = c.execute(self.sql.receiving, {"id": instance_id}).fetchone()
            receivable(instance_id, None if row is None else row[0], event, self.where)
            return str(c.execute(self.sql.publish, params).fetchall()[0][0])
        return insert

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        rows = await self._query(lambda c: c.execute(self.sql.events, {"id": instance_id}).fetchall())
        return [(str(event_id), name) for event_id, name in rows]

    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        params = {"id": instance_id, "event": int(event_id)}
        row = await self._query(lambda c: self.dialect.read_blobs(
            c, self.sql.payload, params).fetchone())
        return None if row is None else self._payload_of(instance_id, row[0], event_id, row[1])

    # --- instances -------------------------------------------------------------------------------
    async def create(self, instance_id: str, state: State) -> bool:
        columns = {**self._columns(instance_id, state), "start_digest": start_digest(state)}
        entries = self._entries(instance_id, state)

        def insert(c: Connection) -> bool:
            if c.execute(self.sql.create, columns).rowcount == 1:
                self._add_entries(c, instance_id, *entries)
                return True
            # It exists (committed: a concurrent insert of the id waited for it, and neither
            # the program nor the digest changes afterwards): the same start, or refused.
            program, digest = c.execute(self.sql.started, {"id": instance_id}).fetchone()
            same_start(instance_id, program, digest, state)
            return False
        return await self._write(instance_id, insert, wakes=True)

    async def claim(self, owner: str, programs: Collection[str], limit: int,
                    lease_seconds: float, now: float | None = None, *,
                    refused_code: Collection[str] = (),
                    refused_ids: Collection[str] = ()) -> list[Lease]:
        if not programs or limit <= 0:
            return []
        await self._watch()  # whatever changes after this look wakes the worker
        listed = self.dialect.list_value
        params = {"programs": listed(list(programs)), "limit": limit, "timers": now, "owner": owner,
                  "seconds": float(lease_seconds), "refused_code": listed(list(refused_code)),
                  "refused_ids": listed(list(refused_ids))}

        def take(c: Connection) -> tuple[list[Any], list[Any]]:
            rows = self.dialect.read_blobs(c, self.sql.claim, params).fetchall()
            if not rows:
                return rows, []
            ids = self.dialect.list_value([row[0] for row in rows])
            return rows, c.execute(self.sql.claimed_events, {"ids": ids}).fetchall()
        if self.dialect.many_writers:
            rows, events = await self._query(take)  # the claim is a transaction of its own
        elif await self._query(lambda c: c.execute(self.sql.any_runnable, params).fetchone()):
            rows, events = await self._write("", take, wakes=False, atomic=True)
        else:
            return []  # the common case takes no write lock
        waiting: dict[str, list[tuple[str, str]]] = {row[0]: [] for row in rows}
        for instance_id, event_id, name in events:
            waiting[instance_id].append((str(event_id), name))
        rows.sort(key=lambda row: (row[3], row[0]))
        return [Lease(instance_id, program, fence, owner, code, self._handed_over(instance_id, state),
                      waiting[instance_id]) for instance_id, program, fence, _, state, code in rows]

    @property
    def keeps_time(self) -> bool:
        return self.dialect.server_clock

    async def now(self) -> float:
        row = await self._query(lambda c: c.execute(self.sql.now).fetchone())
        return float(row[0])

    async def next_wake(self, programs: Collection[str]) -> float | None:
        params = {"programs": self.dialect.list_value(list(programs))}
        row = await self._query(lambda c: c.execute(self.sql.next_wake, params).fetchone())
        return None if row is None else row[0]

    async def renew(self, leases: Collection[Lease], lease_seconds: float) -> list[Lease]:
        # Rows are locked in id order, as a batch of saves locks them: the two cannot deadlock.
        ordered = sorted(leases, key=lambda lease: lease.instance_id)
        if not ordered:
            return []

        def extend(c: Connection) -> list[Lease]:
            return [lease for lease in ordered if c.execute(
                self.sql.renew, {**_held(lease), "seconds": float(lease_seconds)}).rowcount == 0]
        return await self._write(ordered[0].instance_id, extend, wakes=False)

    async def save_leased(self, lease: Lease, state: State) -> None:
        ends = _ends_run(state)
        params = {**self._columns(lease.instance_id, state), **_held(lease), "ends": ends}
        done = self._consumed(state)
        entries = self._entries(lease.instance_id, state)

        def update(c: Connection) -> None:
            if c.execute(self.sql.save_leased, params).rowcount == 0:
                raise LeaseLost(lease.instance_id, lease.token)
            self._consume(c, lease.instance_id, done)
            self._add_entries(c, lease.instance_id, *entries)
        await self._write(lease.instance_id, update, wakes=ends)

    async def release(self, lease: Lease) -> None:
        await self._write(lease.instance_id, lambda c: c.execute(self.sql.release, _held(lease)),
                          wakes=True, atomic=True)

    async def block(self, lease: Lease, reason: str) -> None:
        await self._write(lease.instance_id, lambda c: c.execute(
            self.sql.block, {**_held(lease), "reason": reason}), wakes=True, atomic=True)

    async def info(self, instance_id: str) -> InstanceInfo | None:
        row = await self._query(lambda c: c.execute(self.sql.info, {"id": instance_id}).fetchone())
        return None if row is None else InstanceInfo(*row)

    async def history(self, instance_id: str, after: int = 0,
                      limit: int = history.KEEP) -> list[HistoryEntry]:
        params = {"id": instance_id, "after": after, "limit": limit}
        rows = await self._query(lambda c: c.execute(self.sql.history, params).fetchall())
        if not rows and await self._query(
                lambda c: c.execute(self.sql.exists, {"id": instance_id}).fetchone()) is None:
            raise UnknownInstanceError(instance_id, self.where)
        return [self._open_entry(instance_id, tuple(row)) for row in rows]

    def _add_entries(self, c: Connection, instance_id: str, entries: list[Stored],
                     trim: bool) -> None:
        for _, at, kind, data in entries:  # numbered by the table's key
            c.execute(self.sql.add_history, {"id": instance_id, "at": at, "kind": kind,
                                             "data": data})
        if trim:
            c.execute(self.sql.trim_history, {"id": instance_id, "keep": history.KEEP})

    def _add_entry(self, c: Connection, instance_id: str, kind: str, **data: Any) -> None:
        """An entry for what a client did, at the database's time."""
        c.execute(self.sql.add_history_now, {"id": instance_id, "kind": kind,
                                             "data": self._seal_text(instance_id,
                                                                     json.dumps(data))})

    async def summary(self, instance_id: str) -> dict[str, Any] | None:
        row = await self._query(lambda c: c.execute(self.sql.summary,
                                                     {"id": instance_id}).fetchone())
        if row is None:
            raise UnknownInstanceError(instance_id, self.where)
        return None if row[0] is None else json.loads(self._open_text(instance_id, row[0]))

    async def list(self, status: str | None = None, limit: int = 1000) -> list[InstanceInfo]:
        if status is None:
            query, params = self.sql.list, {"limit": limit}
        else:
            query, params = self.sql.list_status, {"limit": limit, "status": status}
        rows = await self._query(lambda c: c.execute(query, params).fetchall())
        return [InstanceInfo(*row) for row in rows]

    async def terminate(self, instance_id: str, reason: str) -> bool:
        def stop(c: Connection) -> bool:
            row = c.execute(self.sql.state_for_update, {"id": instance_id}).fetchone()
            if row is None:
                raise UnknownInstanceError(instance_id, self.where)
            if row[1] in ENDED:
                return False
            try:
                saved = self._state_of(instance_id, row[0])
            except IncompatibleStateError:
                saved = {}  # a state nobody can read: terminating is how to be rid of it
            state = terminated(saved, reason)
            c.execute(self.sql.terminate, {"id": instance_id, "status": status_of(state),
                                           "state": self._state_blob(instance_id, state),
                                           "reason": reason})
            c.execute(self.sql.drop_events, {"id": instance_id})
            self._add_entry(c, instance_id, history.TERMINATED, reason=reason)
            return True
        return await self._write(instance_id, stop, wakes=True)

    async def resign(self, *, adopt_unsigned: bool = False) -> Resigned:
        """Seal every state and payload anew with the first key, so the others can be dropped
        after a rotation (``adopt_unsigned``: also sign those saved without a signature, on
        trust). Runs beside workers: a row saved meanwhile is left as its writer sealed it."""
        left: list[str] = []
        resealed = self._resealer(adopt_unsigned, left)
        changed = 0
        for table in TABLES:
            after = None
            while True:
                after, count = await self._write("", functools.partial(
                    reseal_batch, d=self.dialect, table=table, after=after, resealed=resealed),
                    wakes=False)
                changed += count
                if after is None:
                    break
        return Resigned(changed, left)

    async def retry(self, instance_id: str) -> bool:
        def again(c: Connection) -> bool:
            row = c.execute(self.sql.state_for_update, {"id": instance_id}).fetchone()
            if row is None:
                raise UnknownInstanceError(instance_id, self.where)
            if row[1] != FAILED:
                return False
            last = self._state_of(instance_id, row[0]).get("retry")
            if last is None:
                raise ValueError(f"instance {instance_id!r} failed before it saved any state to "
                                 "retry from")
            c.execute(self.sql.retry, self._columns(instance_id, last))
            self._add_entry(c, instance_id, history.RETRIED)
            return True
        return await self._write(instance_id, again, wakes=True)

    async def unfinished(self, programs: Collection[str]) -> list[tuple[str, str, str, str | None]]:
        params = {"programs": self.dialect.list_value(list(programs))}
        rows = await self._query(lambda c: c.execute(self.sql.unfinished, params).fetchall())
        return [tuple(row) for row in rows]

    async def suspend(self, instance_id: str) -> bool:
        return await self._set_suspended(instance_id, True)

    async def resume(self, instance_id: str) -> bool:
        return await self._set_suspended(instance_id, False)

    async def _set_suspended(self, instance_id: str, suspended: bool) -> bool:
        def update(c: Connection) -> bool:
            if c.execute(self.sql.exists, {"id": instance_id}).fetchone() is None:
                raise UnknownInstanceError(instance_id, self.where)
            if c.execute(self.sql.suspend,
                         {"id": instance_id, "suspended": suspended}).rowcount == 0:
                return False
            self._add_entry(c, instance_id,
                            history.SUSPENDED if suspended else history.UNSUSPENDED)
            return True
        return await self._write(instance_id, update, wakes=not suspended)

    # --- waiting for changes ---------------------------------------------------------------------
    async def wait_for_change(self, timeout: float) -> None:
        """Each task sees each change once: it remembers the last one it returned for."""
        if self._closed:
            raise self._failure(StoreError("the store is closed"))
        await self._watch()
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        woken = self._waiters.setdefault(loop, asyncio.Event())  # before the look: no wake lost
        if self._generation == self._marks.get(task, 0):
            await wait_set(woken, timeout)
        self._marks[task] = self._generation

    async def _watch(self) -> None:
        if not self._watching:
            await asyncio.to_thread(self._watch_once)

    def _watch_once(self) -> None:
        with self._watch_lock:
            if not self._watching:
                self._start_watching()
                self._watching = True

    def _unwatch(self) -> None:
        with self._watch_lock:
            self._stop_watching()

    def _wake(self) -> None:
        """Something changed: wake every waiter, in any loop. Safe from any thread."""
        self._generation = next(self._changes_seen)
        for loop in list(self._waiters):
            try:
                loop.call_soon_threadsafe(self._fire, loop)
            except RuntimeError:  # that loop is closed
                self._waiters.pop(loop, None)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        woken = self._waiters.pop(loop, None)
        if woken is not None:
            woken.set()

    def _committed(self, wakes: bool) -> None:
        """After each commit: work it made wakes this process's waiters at once; a database
        that announces work itself (NOTIFY) wakes them through that."""
        if wakes and self.dialect.notify is None:
            self._wake()

    # --- closing ---------------------------------------------------------------------------------
    async def close(self) -> None:
        """Commit the writes queued so far, then close every connection and thread."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._writer.close)
        await asyncio.to_thread(self._readers.close)
        await asyncio.to_thread(self._unwatch)

    # --- connections, reads and writes -----------------------------------------------------------
    def _open(self) -> Connection:
        """A new connection, the schema brought up to date on the first."""
        try:
            connection = self._connect()
        except self.dialect.errors as error:
            raise self._failure(error) from None
        if not self._schema_ready:
            try:
                with self._schema_lock:
                    if not self._schema_ready:
                        migrate(connection, self.dialect, self.where, self.keyring)
                        self._schema_ready = True
            except BaseException as error:
                close_quietly(connection)
                if isinstance(error, self.dialect.errors):
                    raise self._failure(error) from None
                raise
        return connection

    async def _query(self, query: Callable[[Connection], T]) -> T:
        """Run ``query`` on a reader thread's connection: each statement a transaction."""
        reply = ToLoop()
        self._readers.submit(query, reply)
        return await reply.future

    async def _write(self, key: str, operation: Operation[T], wakes: bool,
                     atomic: bool = False, announced: bool = False) -> T:
        """Run ``operation`` in the writer's next transaction (``atomic``: it is one statement).
        If the caller is cancelled before the writer takes it, it does not run; once taken, it
        runs to its end."""
        reply = ToLoop()
        self._writer.submit(Write(key, operation, reply, wakes, atomic, announced))
        return await reply.future

    def _failure(self, error: BaseException) -> StoreError:
        """A database error as the StoreError callers see: naming the database, no secret."""
        text = re.sub(r"\s+", " ", str(error).strip() or type(error).__name__)
        return StoreError(f"{self.where}: {self._clean(text)}")

    # --- rows ------------------------------------------------------------------------------------
    def _columns(self, instance_id: str, state: State) -> dict[str, Any]:
        """The columns a saved state sets."""
        check_instance_id(instance_id)
        blob = self._state_blob(instance_id, state)
        waits = state.get("waiting_events")
        positions = state.get("positions")
        return {"id": instance_id, "program": state.get("program", ""), "status": status_of(state),
                "waiting_for": state.get("waiting_for"), "wake_at": state.get("wake_at"),
                "waits": self.dialect.list_value(waits) if waits else None, "state": blob,
                "code": code_version(positions) if positions else None,
                "positions": f"[{','.join(positions)}]" if positions else None,
                "summary": self._seal_text(instance_id, state.get("summary"))}

    def _handed_over(self, instance_id: str, blob: bytes) -> State | None:
        """A claimed instance's state, if it can be read (else the worker's load says why)."""
        try:
            return self._state_of(instance_id, blob)
        except IncompatibleStateError:
            return None

    def _consumed(self, state: State) -> Any:
        """The events a saved state consumed (each saved as a number), as ``_consume`` takes them."""
        ids = [int(event_id) for event_id in consumed(state) if event_id.isdigit()]
        return self.dialect.list_value(ids) if ids else None

    def _consume(self, c: Connection, instance_id: str, events: Any) -> None:
        if events is not None:
            c.execute(self.sql.consume, {"id": instance_id, "events": events})


def code_version(positions: list[str]) -> str:
    """The code an instance needs, as one short name: the functions and fingerprints of its
    frames (``migration.Position``). A worker that could not run an instance skips every
    instance that needs the same."""
    functions = sorted({"@".join(json.loads(position)[:2]) for position in positions})
    return hashlib.sha256("|".join(functions).encode()).hexdigest()[:16]


def _held(lease: Lease) -> dict[str, Any]:
    return {"id": lease.instance_id, "fence": lease.token, "owner": lease.owner}


def _ends_run(state: State) -> bool:
    """A save that is not of a running instance ends its lease (and may be what a client awaits)."""
    return status_of(state) != RUNNING
