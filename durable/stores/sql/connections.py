"""The connections of the SQL core's threads: DB-API connections in autocommit mode (the core
begins its own transactions), each kept by one thread between uses."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Connection = Any
Operation = Callable[[Connection], T]  # statements run on one connection, and their answer

IDLE = 1.0  # seconds unused, after which a connection is checked before its next use


class Kept:
    """The connection one thread keeps. After a pause it is checked with a statement that
    costs nothing: one the server closed meanwhile (a restart, an idle timeout) is replaced
    before it can fail a caller's work. One that failed is dropped: the next use opens a new
    one."""

    def __init__(self, connect: Callable[[], Connection], errors: tuple[type[BaseException], ...],
                 connection: Connection | None = None) -> None:
        self.connect = connect
        self.errors = errors
        self._connection = connection  # one opened already, if any
        self._used = time.monotonic()

    def get(self) -> Connection:
        now = time.monotonic()
        if self._connection is not None and now - self._used > IDLE:
            try:
                self._connection.execute("SELECT 1")
            except self.errors:
                self.drop()
        if self._connection is None:
            self._connection = self.connect()
        self._used = now
        return self._connection

    def drop(self) -> None:
        if self._connection is not None:
            close_quietly(self._connection)
            self._connection = None


def close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection.close()
