"""The group-commit writer: one thread that makes every write of a store.

Writes queued while the previous commit was in flight run in one transaction,
each in its own savepoint (a refused write does not undo the others), and are
committed once: a hundred instances saving at once cost one commit, one
fsync. Writes run in the order of their instance ids, so two writers lock
rows in the same order and cannot deadlock each other; one that the database
rolled back anyway (a deadlock's victim, a serialization failure) runs again.

A write whose caller has gone (its future was cancelled before the write
began) is skipped. The thread never dies of a write: if it dies all the same,
it fails the writes it held, says so in the log, and a new thread takes over
the queue.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ...errors import StoreError
from .dialect import Dialect

T = TypeVar("T")
Connection = Any  # a DB-API connection in autocommit mode: transactions are ours to begin
Operation = Callable[[Connection], T]

MAX_BATCH = 500  # writes per transaction
ATTEMPTS = 5  # runs of a write that the database rolled back to let another through

logger = logging.getLogger("durable.store")


@dataclass
class Write(Generic[T]):
    key: str  # the instance it writes: the order of row locks
    operation: Operation[T]
    future: concurrent.futures.Future[T]
    wakes: bool  # it makes work for workers (a start, an event, an ended lease)


class _Stop:
    """Put on the queue by ``close``: commit what came before, then end."""


class GroupCommitWriter:
    def __init__(self, name: str, dialect: Dialect, connect: Callable[[], Connection],
                 failure: Callable[[BaseException], StoreError],
                 committed: Callable[[bool], None]) -> None:
        """``connect`` opens a connection; ``failure`` says what a database error means for
        the caller; ``committed(wakes)`` runs after every commit."""
        self.name = name
        self.dialect = dialect
        self.connect = connect
        self.failure = failure
        self.committed = committed
        self.commits = 0  # transactions committed: fewer than writes under load
        self._queue: queue.SimpleQueue[Write[Any] | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, key: str, operation: Operation[T], wakes: bool) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:  # nothing is queued behind close's stop
            if self._closed:
                raise self.failure(StoreError("the store is closed"))
            self._queue.put(Write(key, operation, future, wakes))
            if self._thread is None or not self._thread.is_alive():
                self._start()
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the thread (blocks until it has)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_Stop())
        while (thread := self._thread) is not None and thread.is_alive():
            thread.join()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"durable writer {self.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = None
        held: list[Write[Any]] = []
        stop = False
        try:
            while not stop:
                held, stop = self._take()
                if held:
                    if connection is None:
                        connection = self._connect(held)
                    if connection is not None and not self._commit(connection, held):
                        _close(connection)  # it failed mid-transaction: start afresh
                        connection = None
                    held = []
        except BaseException as error:  # a bug, or the thread was killed: never hang a caller
            logger.error("the writer of %s died; a new one takes over", self.name, exc_info=error)
            for write in held:
                _settle(write.future, False, self.failure(StoreError(
                    f"the writer died before this write was known to be committed: {error!r}")))
            if not stop:
                with self._lock:
                    self._start()
        finally:
            if connection is not None:
                _close(connection)

    def _take(self) -> tuple[list[Write[Any]], bool]:
        """The next batch (waiting for its first write), without writes whose caller has gone."""
        items = [self._queue.get()]
        while len(items) < MAX_BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        writes = [item for item in items
                  if isinstance(item, Write) and item.future.set_running_or_notify_cancel()]
        return writes, any(isinstance(item, _Stop) for item in items)

    def _connect(self, writes: list[Write[Any]]) -> Connection | None:
        try:
            return self.connect()
        except Exception as error:
            failure = error if isinstance(error, StoreError) else self.failure(error)
            for write in writes:
                _settle(write.future, False, failure)
            return None

    def _commit(self, connection: Connection, writes: list[Write[Any]]) -> bool:
        """Run the writes in one transaction; False if the transaction itself failed."""
        writes.sort(key=lambda write: write.key)
        outcomes: list[tuple[bool, Any]] = []
        try:
            connection.execute(self.dialect.begin)
            outcomes = [self._run_one(connection, write) for write in writes]
            wakes = any(ok and write.wakes for (ok, _), write in zip(outcomes, writes, strict=True))
            if wakes and self.dialect.notify is not None:
                connection.execute(self.dialect.notify)
            connection.execute("COMMIT")
        except self.dialect.errors as error:
            with contextlib.suppress(*self.dialect.errors):
                connection.execute("ROLLBACK")
            failure = self.failure(StoreError(
                f"the transaction failed, nothing of it was saved: {error}"))
            for write in writes:
                _settle(write.future, False, failure)
            return False
        self.commits += 1
        for (ok, value), write in zip(outcomes, writes, strict=True):
            _settle(write.future, ok, value)
        self.committed(wakes)
        return True

    def _run_one(self, connection: Connection, write: Write[Any]) -> tuple[bool, Any]:
        """One write in its own savepoint: (True, its result) or (False, its error)."""
        for attempt in range(1, ATTEMPTS + 1):
            connection.execute("SAVEPOINT write")
            try:
                value = write.operation(connection)
            except Exception as error:
                connection.execute("ROLLBACK TO SAVEPOINT write")
                connection.execute("RELEASE SAVEPOINT write")
                if not isinstance(error, self.dialect.errors):
                    return False, error  # the operation's own answer (LeaseLost, ...)
                if attempt == ATTEMPTS or not self.dialect.rolled_back(error):
                    return False, self.failure(error)
                continue
            connection.execute("RELEASE SAVEPOINT write")
            return True, value
        raise AssertionError("unreachable")


def _settle(future: concurrent.futures.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _close(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection.close()
