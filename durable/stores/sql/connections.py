"""What the SQL core knows of a connection: a DB-API connection in autocommit mode (the
core begins its own transactions), and closing one that may be broken already."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Connection = Any
Operation = Callable[[Connection], T]  # statements run on one connection, and their answer


def close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection.close()
