"""The reader threads of a store: each runs queries on a connection of its own.

Queries wait in one queue; a thread opens its connection on its first query
and, after a database error, closes it and opens a new one on the next.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from ...errors import StoreError
from .connections import close_quietly
from .replies import Reply

Query = Callable[[Any], Any]


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
                thread = threading.Thread(target=self._run, daemon=True,
                                          name=f"durable reader {self.name}")
                self._threads.append(thread)
                thread.start()

    def close(self) -> None:
        """Answer the queries queued so far, then stop every thread (blocks until they have)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
            thread.join()

    def _run(self) -> None:
        connection = None
        try:
            while (work := self._next()) is not None:
                query, reply = work
                if not reply.taken():
                    continue
                try:
                    if connection is None:
                        connection = self.connect()
                    reply.send(True, query(connection))
                except self.errors as error:
                    if connection is not None:
                        close_quietly(connection)
                        connection = None
                    reply.send(False, self.failure(error))
                except BaseException as error:
                    reply.send(False, error)
                    if not isinstance(error, Exception):
                        raise
        finally:
            if connection is not None:
                close_quietly(connection)


    def _next(self) -> tuple[Query, Reply] | None:
        with self._lock:
            self._idle += 1
        try:
            return self._queue.get()
        finally:
            with self._lock:
                self._idle -= 1
