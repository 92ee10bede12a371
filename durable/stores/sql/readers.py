"""The reader threads of a store: each runs queries on a connection of its own.

Queries wait in one queue; each thread keeps a connection (``Kept``): opened
on its first query, checked after a pause, replaced after a database error.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ...errors import StoreError
from .connections import Kept
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

    def close(self) -> None:
        """Answer the queries queued so far, then stop every thread (blocks until they have)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
            thread.join()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, daemon=True, name=f"durable reader {self.name}")
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        kept = Kept(self.connect, self.errors)
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
