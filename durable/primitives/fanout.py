"""Fan-out inside one instance: ``gather``, ``first`` and ``map``.

Each call given becomes a *branch*: a stack of frames of its own, run
concurrently with the others, saved with the instance. A branch that waits
(for an event, a timer, a retry) does not hold up the others. The primitive
in the awaiting frame keeps only branch ids and its own counters; the runtime
keeps the branches and their outcomes.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .base import Deliver, Outcome, Primitive, Run, Sentinel, Throw, WaitBranches


class Gather(Primitive):
    """``asyncio.gather`` for durable calls: results in argument order."""

    __slots__ = ("calls", "error", "pending", "results", "return_exceptions")

    def __init__(self, calls: tuple[Awaitable[Any], ...], return_exceptions: bool) -> None:
        self.calls: tuple[Awaitable[Any], ...] | None = calls
        self.return_exceptions = return_exceptions
        self.pending: dict[int, int] = {}  # branch id -> argument index, until it ends
        self.results: list[Any] = []
        self.error: tuple[int, BaseException] | None = None  # the first to fail (order, error)

    async def advance(self, run: Run) -> Outcome:
        if self.calls is not None:
            calls, self.calls = self.calls, None
            self.results = [None] * len(calls)
            self.pending = {run.start_branch(call, f"gather() argument {n}"): n - 1
                            for n, call in enumerate(calls, 1)}
        for ok, value, order, index in _harvest(run, self.pending):
            self.results[index] = value
            if not ok and not self.return_exceptions and (self.error is None
                                                          or order < self.error[0]):
                self.error = (order, value)
        if self.error is not None:  # raised as asyncio.gather raises it; the others go on
            run.release_branches(self.pending)
            return Throw(self.error[1])
        return WaitBranches() if self.pending else Deliver(self.results)

    def describe(self) -> str:
        return "gather()"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.return_exceptions, self.pending, self.results, self.error)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.calls = None
        self.return_exceptions, self.pending, self.results, self.error = state


def _harvest(run: Run, pending: dict[int, int]) -> list[tuple[bool, Any, int, int]]:
    """The outcomes of the branches in ``pending`` that have ended, which are forgotten (so a
    fan-out's saved state holds only the branches still running)."""
    ended, finished = [], []
    for branch, index in list(pending.items()):
        outcome = run.branch_outcome(branch)
        if outcome is not None:
            del pending[branch]
            finished.append(branch)
            ended.append((*outcome, index))
    run.release_branches(finished)
    return ended


class First(Primitive):
    """The outcome of the first call to finish; the others are cancelled first."""

    __slots__ = ("calls", "decided", "pending")

    def __init__(self, calls: tuple[Awaitable[Any], ...]) -> None:
        self.calls: tuple[Awaitable[Any], ...] | None = calls
        self.pending: dict[int, int] = {}
        self.decided: Outcome | None = None

    async def advance(self, run: Run) -> Outcome:
        if self.calls is not None:
            calls, self.calls = self.calls, None
            self.pending = {run.start_branch(call, f"first() argument {n}"): n - 1
                            for n, call in enumerate(calls, 1)}
        ended = _harvest(run, self.pending)
        if self.decided is None and ended:
            ok, value, _, _ = min(ended, key=lambda outcome: outcome[2])
            self.decided = Deliver(value) if ok else Throw(value)
            run.cancel_branches(self.pending)
        if self.decided is None or self.pending:  # the losers unwind before it returns
            return WaitBranches()
        return self.decided

    def describe(self) -> str:
        return "first()"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.pending, self.decided)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.calls = None
        self.pending, self.decided = state


# Stands in a map() result for an item that did not run to the end (min_successful came first).
SKIPPED = Sentinel("SKIPPED", __name__)


class MapRun(Primitive):
    """``fn(item)`` for every item as a branch, at most ``concurrency`` at a time."""

    __slots__ = ("concurrency", "decided", "failures", "fn", "items", "min_successful",
                 "next", "pending", "results", "succeeded", "tolerated_failures")

    def __init__(self, fn: Callable[[Any], Awaitable[Any]], items: list[Any],
                 concurrency: int | None, min_successful: int | None,
                 tolerated_failures: int) -> None:
        self.fn = fn
        self.items = items
        self.concurrency = concurrency
        self.min_successful = min_successful
        self.tolerated_failures = tolerated_failures
        self.next = 0  # the first item not started
        self.pending: dict[int, int] = {}  # branch id -> item index, while it runs
        self.results: list[Any] = [SKIPPED] * len(items)
        self.succeeded = 0
        self.failures: list[tuple[int, BaseException]] = []  # (order, error)
        self.decided: Outcome | None = None  # ended early: the running items are cancelled

    async def advance(self, run: Run) -> Outcome:
        if self.decided is not None:
            return self._after_cancelled(run)
        for ok, value, order, index in _harvest(run, self.pending):
            self.results[index] = value
            if ok:
                self.succeeded += 1
            else:
                self.failures.append((order, value))
        if len(self.failures) > self.tolerated_failures:
            first = min(self.failures, key=lambda failure: failure[0])[1]
            first.add_note(f"map(): {len(self.failures)} of {len(self.items)} items failed, "
                           f"{self.tolerated_failures} tolerated")
            self.decided = Throw(first)
        elif self.min_successful is not None and self.succeeded >= self.min_successful:
            self.decided = Deliver(self.results)
        if self.decided is not None:
            run.cancel_branches(self.pending)
            return self._after_cancelled(run)
        while self.next < len(self.items) and (self.concurrency is None
                                               or len(self.pending) < self.concurrency):
            call = self.fn(self.items[self.next])
            self.pending[run.start_branch(call, f"map() item {self.next}")] = self.next
            self.next += 1
        return WaitBranches() if self.pending else Deliver(self.results)

    def _after_cancelled(self, run: Run) -> Outcome:
        """``decided``, once every item cancelled has unwound; they stay SKIPPED."""
        _harvest(run, self.pending)
        assert self.decided is not None
        return WaitBranches() if self.pending else self.decided

    def describe(self) -> str:
        return f"map({getattr(self.fn, '__qualname__', self.fn)!s})"

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in MapRun.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(MapRun.__slots__, state, strict=True):
            setattr(self, name, value)


FANOUTS = (Gather, First, MapRun)  # primitives that wait for branches


def gather(*calls: Awaitable[Any], return_exceptions: bool = False) -> Gather:
    """``results = await gather(a(1), b(2))``: run durable calls concurrently in this instance.

    Like ``asyncio.gather``: results in argument order; the first error raised is raised here
    (the other branches go on), or with ``return_exceptions=True`` is returned in its place.
    Arguments are calls of your ``async def`` functions or durable primitives (``sleep``,
    ``wait_for_event``, ``step``...).
    """
    return Gather(calls, return_exceptions)


def first(*calls: Awaitable[Any]) -> First:
    """The result (or error) of the first call to finish; the rest are cancelled (each gets
    ``asyncio.CancelledError`` at its suspension point, so its ``finally`` blocks run)."""
    if not calls:
        raise ValueError("first() needs at least one call")
    return First(calls)


def map(fn: Callable[[Any], Awaitable[Any]], items: Iterable[Any], *,
        concurrency: int | None = None, min_successful: int | None = None,
        tolerated_failures: int = 0) -> MapRun:
    """``await map(fn, items, concurrency=10)``: ``fn(item)`` for every item, as concurrent
    branches, at most ``concurrency`` at a time; results in input order.

    More than ``tolerated_failures`` failures raise the first (the running items are
    cancelled); tolerated ones leave their exception in the results. With ``min_successful``
    it ends once that many succeeded: items cut short are ``durable.SKIPPED`` in the results.
    """
    items = builtins.list(items)
    if not callable(fn):
        raise TypeError(f"map() needs a function to call on each item, got {type(fn).__name__}")
    for name, value in (("concurrency", concurrency), ("min_successful", min_successful)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"map({name}=...) must be a whole number of at least 1, got {value!r}")
    if not isinstance(tolerated_failures, int) or tolerated_failures < 0:
        raise ValueError(f"map(tolerated_failures=...) must be 0 or more, got {tolerated_failures!r}")
    return MapRun(fn, items, concurrency, min_successful, tolerated_failures)
