"""How the store's threads answer whoever handed them work.

An async caller waits on a future of its own event loop, set through
``call_soon_threadsafe`` (cheaper than a ``concurrent.futures.Future`` chained
to it); a synchronous caller waits on a ``concurrent.futures.Future``. Either
way a thread first asks whether the caller still waits, and skips the work if
not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import Any


class Reply:
    def taken(self) -> bool:
        """The work begins: False if its caller has gone (then it is skipped)."""
        raise NotImplementedError

    def send(self, ok: bool, value: Any) -> None:
        """The result (``ok``) or the error; any answer after the first is ignored."""
        raise NotImplementedError


class ToLoop(Reply):
    """For a caller awaiting ``future`` in its event loop."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()

    def taken(self) -> bool:
        return not self.future.cancelled()

    def send(self, ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(_resolve, self.future, ok, value)


class ToThread(Reply):
    """For a caller blocked on ``future.result()``."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def taken(self) -> bool:
        return self.future.set_running_or_notify_cancel()

    def send(self, ok: bool, value: Any) -> None:
        _resolve(self.future, ok, value)


def _resolve(future: Any, ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
