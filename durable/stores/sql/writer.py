"""The group-commit writer: one thread that makes every write of a store.

Writes queued while the previous commit was in flight run in one transaction,
each in its own savepoint (a refused write does not undo the others), and are
committed once: a hundred instances saving at once cost one commit, one
fsync. Writes run in the order of their instance ids, so two writers lock
rows in the same order and cannot deadlock each other; one that the database
rolled back anyway (a deadlock's victim, a serialization failure) runs again.

A write whose caller has gone (cancelled before the write began) is
skipped. The thread never dies of a write: if it dies all the same,
it fails the writes it held, says so in the log, and a new thread takes over
the queue.

While it waits for writes, the writer can also watch for other processes'
commits on its connection (``watch``: SQLite's ``data_version`` ignores the
connection's own), quickly just after it wrote (1 ms, then twice as long each
time up to ``poll``): work tends to follow work.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ...errors import StoreError
from .connections import Connection, Kept, Operation
from .dialect import Dialect
from .replies import Reply

T = TypeVar("T")

MAX_BATCH = 500  # writes per transaction
ATTEMPTS = 5  # runs of a write that the database rolled back to let another through
FIRST_POLL = 0.001  # seconds: the first look for other processes' commits after a write

logger = logging.getLogger("durable.store")


@dataclass(slots=True)
class Write(Generic[T]):
    key: str  # the instance it writes: the order of row locks
    operation: Operation[T]
    reply: Reply
    wakes: bool  # it makes work for workers (a start, an event, an ended lease)
    atomic: bool  # it is one statement: alone in a batch, it needs no transaction of its own
    announced: bool = False  # that statement wakes other processes itself (``Dialect.announce``)


class _Stop:
    """Put on the queue by ``close``: commit what came before, then end."""


@dataclass
class _Look:
    """Put on the queue by ``watch``: look now, then say so."""

    looked: threading.Event


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
        self._queue: queue.SimpleQueue[Write[Any] | _Stop | _Look] = queue.SimpleQueue()
        self._notice: Callable[[Connection], bool] | None = None
        self._poll = 0.0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, write: Write[Any]) -> None:
        self._put(write)

    def watch(self, notice: Callable[[Connection], bool], poll: float) -> None:
        """From now on, between writes, call ``notice(connection)`` at least every ``poll``
        seconds; it returns True when another process changed the store. Returns once the
        first look was taken: what changes after it will be noticed."""
        self._notice, self._poll = notice, poll
        looked = threading.Event()
        self._put(_Look(looked))
        looked.wait()

    def _put(self, item: Write[Any] | _Look) -> None:
        with self._lock:  # nothing is queued behind close's stop
            if self._closed:
                raise self.failure(StoreError("the store is closed"))
            self._queue.put(item)
            if self._thread is None or not self._thread.is_alive():
                self._start()

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
        kept = Kept(self.connect, self.dialect.errors)
        held: list[Write[Any]] = []
        stop = False
        try:
            while not stop:
                held, stop = self._take(kept)
                if held:
                    connection = self._connect(kept, held)
                    alone = len(held) == 1 and held[0].atomic and self.dialect.many_writers
                    commit = self._alone if alone else self._commit
                    if connection is not None and not commit(connection, held):
                        kept.drop()  # it failed mid-transaction: start afresh
                    held = []
        except BaseException as error:  # a bug, or the thread was killed: never hang a caller
            logger.error("the writer of %s died; a new one takes over", self.name, exc_info=error)
            for write in held:
                write.reply.send(False, self.failure(StoreError(
                    f"the writer died before this write was known to be committed: {error!r}")))
            if not stop:
                with self._lock:
                    self._start()
        finally:
            kept.drop()

    def _take(self, kept: Kept) -> tuple[list[Write[Any]], bool]:
        """The next batch (waiting for its first write, and watching meanwhile), without
        writes whose caller has gone; and whether to stop after it."""
        poll = FIRST_POLL
        while True:
            if self._notice is not None and self._noticed(kept):
                poll = FIRST_POLL
            try:
                items = [self._queue.get(timeout=None if self._notice is None else poll)]
                break
            except queue.Empty:
                poll = min(2 * poll, self._poll)
        while len(items) < MAX_BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for look in (item for item in items if isinstance(item, _Look)):
            self._noticed(kept)
            look.looked.set()
        writes = [item for item in items if isinstance(item, Write) and item.reply.taken()]
        return writes, any(isinstance(item, _Stop) for item in items)

    def _noticed(self, kept: Kept) -> bool:
        assert self._notice is not None
        try:
            return self._notice(kept.get())
        except Exception:  # the next write, or the next look, will tell what is wrong
            kept.drop()
            return False

    def _connect(self, kept: Kept, writes: list[Write[Any]]) -> Connection | None:
        try:
            return kept.get()
        except Exception as error:
            failure = error if isinstance(error, StoreError) else self.failure(error)
            for write in writes:
                write.reply.send(False, failure)
            return None

    def _alone(self, connection: Connection, writes: list[Write[Any]]) -> bool:
        """One write of one statement, where writers need not take a lock first: it runs as
        its own transaction, and the announcement of the work it made, if any, follows its
        commit. False if the database failed."""
        [write] = writes
        for attempt in range(1, ATTEMPTS + 1):
            try:
                value = write.operation(connection)
            except Exception as error:
                if self._again(error, attempt):
                    continue
                write.reply.send(False, self._answer(error))
                return not isinstance(error, self.dialect.errors)
            break
        self.commits += 1
        write.reply.send(True, value)
        if write.wakes and self.dialect.notify is not None and not write.announced:
            try:
                connection.execute(self.dialect.notify)
            except self.dialect.errors:
                return False
        self.committed(write.wakes)
        return True

    def _commit(self, connection: Connection, writes: list[Write[Any]]) -> bool:
        """Run the writes in one transaction; False if the transaction itself failed.

        Statements that take no parameters (begin, savepoints, commit) wait in ``control``
        and go with the next ones: one round trip where the database allows it."""
        writes.sort(key=lambda write: write.key)
        savepoints = len(writes) > 1  # a lone write's transaction is its savepoint
        control = [self.dialect.begin]
        outcomes: list[tuple[bool, Any]] = []
        try:
            outcomes = [self._run_one(connection, write, control, savepoints) for write in writes]
            wakes = any(ok and write.wakes for (ok, _), write in zip(outcomes, writes, strict=True))
            commits = savepoints or outcomes[0][0]  # else the lone write was rolled back
            if commits:
                if wakes and self.dialect.notify is not None:
                    control.append(self.dialect.notify)
                control.append("COMMIT")
            self.dialect.execute_together(connection, control)
        except self.dialect.errors as error:
            with contextlib.suppress(*self.dialect.errors):
                connection.execute("ROLLBACK")
            failure = self.failure(StoreError(
                f"the transaction failed before it was known to commit: {error}"))
            for write in writes:
                write.reply.send(False, failure)
            return False
        self.commits += commits
        for (ok, value), write in zip(outcomes, writes, strict=True):
            write.reply.send(ok, value)
        self.committed(wakes)
        return True

    def _run_one(self, connection: Connection, write: Write[Any], control: list[str],
                 savepoints: bool) -> tuple[bool, Any]:
        """One write, in a savepoint of its own: (True, its result) or (False, its error).
        Leaves in ``control`` what must follow it."""
        for attempt in range(1, ATTEMPTS + 1):
            if savepoints:
                control.append("SAVEPOINT write")
            self.dialect.execute_together(connection, control)
            control.clear()
            try:
                value = write.operation(connection)
            except Exception as error:
                again = self._again(error, attempt)
                if savepoints:
                    control += ["ROLLBACK TO SAVEPOINT write", "RELEASE SAVEPOINT write"]
                else:
                    control += ["ROLLBACK", self.dialect.begin] if again else ["ROLLBACK"]
                if again:
                    continue
                return False, self._answer(error)
            if savepoints:
                control.append("RELEASE SAVEPOINT write")
            return True, value
        raise AssertionError("unreachable")

    def _again(self, error: Exception, attempt: int) -> bool:
        """Run a write again: the database rolled it back to let another transaction through."""
        return (isinstance(error, self.dialect.errors) and attempt < ATTEMPTS
                and self.dialect.rolled_back(error))

    def _answer(self, error: Exception) -> Exception:
        """What the caller of a failed write gets: the operation's own error (LeaseLost, ...),
        or a database error as a StoreError."""
        return self.failure(error) if isinstance(error, self.dialect.errors) else error
