"""The reader threads of a store: each runs queries on a connection of its own.

Queries wait in one queue; each thread keeps a connection (``Kept``), checked
after a pause and replaced after a database error. A thread is added when a
query finds every thread busy, up to a number; it connects before it takes a
query, so the query goes to whichever thread is free first.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ...errors import StoreError
from .connections import Kept, close_quietly
from .replies import Reply

Query = Callable[[Any], Any]

logger = logging.getLogger("durable.store")


class Readers:
    def __init__(self, count: int, name: str, connect: Callable[[], Any],
                 errors: tuple[type[BaseException], ...],
                 failure: Callable[[BaseException], StoreError]) -> None:
        self.count = count
        self.name = name
        self.connect = connect
        self.errors = errors
        self.failure = failure
        self._queue: queue.SimpleQueue[tuple[Query, Reply] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._spare: list[Any] = []  # connections opened already, for new threads
        self._idle = 0  # threads waiting for a query
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, query: Query, reply: Reply) -> None:
        with self._lock:
            if self._closed:
                raise self.failure(StoreError("the store is closed"))
            self._queue.put((query, reply))
            if not self._idle and len(self._threads) < self.count:
                self._start()

    def adopt(self, connection: Any) -> None:
        """A connection opened already: the next thread to start uses it."""
        with self._lock:
            self._spare.append(connection)

    def close(self) -> None:
        """Answer the queries queued so far, then stop every thread (blocks until they have)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
            spare, self._spare = self._spare, []
        for thread in threads:
            thread.join()
        for connection in spare:
            close_quietly(connection)

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, daemon=True, name=f"durable reader {self.name}")
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        with self._lock:
            kept = Kept(self.connect, self.errors, self._spare.pop() if self._spare else None)
            others = len(self._threads) > 1
        if others:  # they take the queries meanwhile: connect before taking one
            with contextlib.suppress(Exception):  # the first query will say what is wrong
                kept.get()
        try:
            while (work := self._next()) is not None:
                query, reply = work
                if not reply.taken():
                    continue
                try:
                    reply.send(True, query(kept.get()))
                except self.errors as error:
                    kept.drop()
                    reply.send(False, self.failure(error))
                except Exception as error:
                    reply.send(False, error)
                except BaseException as error:
                    reply.send(False, self.failure(StoreError(f"the reader died: {error!r}")))
                    raise
        except BaseException as error:  # a bug, or the thread was killed: another takes over
            logger.error("a reader of %s died; a new one takes over", self.name, exc_info=error)
            with self._lock:
                self._threads.remove(threading.current_thread())
                if not self._closed:
                    self._start()
        finally:
            kept.drop()

    def _next(self) -> tuple[Query, Reply] | None:
        with self._lock:
            self._idle += 1
        try:
            return self._queue.get()
        finally:
            with self._lock:
                self._idle -= 1
