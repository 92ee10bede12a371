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

from .base import Deliver, Outcome, Primitive, Run, Throw, WaitBranches


class Gather(Primitive):
    """``asyncio.gather`` for durable calls: results in argument order."""

    __slots__ = ("calls", "children", "return_exceptions")

    def __init__(self, calls: tuple[Awaitable[Any], ...], return_exceptions: bool) -> None:
        self.calls: tuple[Awaitable[Any], ...] | None = calls
        self.children: list[int] = []
        self.return_exceptions = return_exceptions

    async def advance(self, run: Run) -> Outcome:
        if self.calls is not None:
            calls, self.calls = self.calls, None
            self.children = [run.start_branch(call, f"gather() argument {n}")
                             for n, call in enumerate(calls, 1)]
        outcomes = [run.branch_outcome(child) for child in self.children]
        if not self.return_exceptions:
            failed = [o for o in outcomes if o is not None and not o[0]]
            if failed:  # the first to fail, as asyncio.gather raises it; the others go on
                run.release_branches(self.children)
                return Throw(min(failed, key=lambda o: o[2])[1])
        if any(o is None for o in outcomes):
            return WaitBranches()
        run.release_branches(self.children)
        return Deliver([value for _, value, _ in outcomes])

    def describe(self) -> str:
        return "gather()"

    def __getstate__(self) -> tuple[Any, ...]:
        return (None, self.children, self.return_exceptions)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.calls, self.children, self.return_exceptions = state


class First(Primitive):
    """The outcome of the first call to finish; the others are cancelled first."""

    __slots__ = ("calls", "children", "decided")

    def __init__(self, calls: tuple[Awaitable[Any], ...]) -> None:
        self.calls: tuple[Awaitable[Any], ...] | None = calls
        self.children: list[int] = []
        self.decided: Outcome | None = None

    async def advance(self, run: Run) -> Outcome:
        if self.calls is not None:
            calls, self.calls = self.calls, None
            self.children = [run.start_branch(call, f"first() argument {n}")
                             for n, call in enumerate(calls, 1)]
        if self.decided is None:
            done = [o for o in (run.branch_outcome(child) for child in self.children) if o]
            if not done:
                return WaitBranches()
            ok, value, _ = min(done, key=lambda o: o[2])
            self.decided = Deliver(value) if ok else Throw(value)
            run.cancel_branches(self.children)
        return _after_cancelled(run, self.children, self.decided)

    def describe(self) -> str:
        return "first()"

    def __getstate__(self) -> tuple[Any, ...]:
        return (None, self.children, self.decided)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.calls, self.children, self.decided = state


def _after_cancelled(run: Run, children: list[int], decided: Outcome) -> Outcome:
    """``decided``, once every branch cancelled has unwound (its ``finally`` blocks ran)."""
    if any(run.branch_outcome(child) is None for child in children):
        return WaitBranches()
    run.release_branches(children)
    return decided


class Skipped:
    """Stands in a ``map`` result for an item that did not run to the end (``min_successful``
    was reached first). Pickled by reference."""

    def __reduce__(self) -> str:
        return "SKIPPED"

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED = Skipped()


class MapRun(Primitive):
    """``fn(item)`` for every item as a branch, at most ``concurrency`` at a time."""

    __slots__ = ("children", "concurrency", "decided", "fn", "items", "min_successful",
                 "tolerated_failures")

    def __init__(self, fn: Callable[[Any], Awaitable[Any]], items: list[Any],
                 concurrency: int | None, min_successful: int | None,
                 tolerated_failures: int) -> None:
        self.fn = fn
        self.items = items
        self.concurrency = concurrency
        self.min_successful = min_successful
        self.tolerated_failures = tolerated_failures
        self.children: list[int | None] = [None] * len(items)  # branch ids, as items start
        self.decided: Outcome | None = None  # ended early: the running items are cancelled

    async def advance(self, run: Run) -> Outcome:
        started = [child for child in self.children if child is not None]
        if self.decided is not None:
            return _after_cancelled(run, started, self.decided)
        outcomes = [None if child is None else run.branch_outcome(child) for child in self.children]
        succeeded = sum(1 for o in outcomes if o is not None and o[0])
        failed = [o for o in outcomes if o is not None and not o[0]]
        if len(failed) > self.tolerated_failures:
            first = min(failed, key=lambda o: o[2])[1]
            first.add_note(f"map(): {len(failed)} of {len(self.items)} items failed, "
                           f"{self.tolerated_failures} tolerated")
            self.decided = Throw(first)
        elif self.min_successful is not None and succeeded >= self.min_successful:
            self.decided = Deliver([SKIPPED if o is None else o[1] for o in outcomes])
        if self.decided is not None:
            run.cancel_branches(started)
            return _after_cancelled(run, started, self.decided)
        running = sum(1 for child, o in zip(self.children, outcomes, strict=True)
                      if child is not None and o is None)
        for index, child in enumerate(self.children):
            if self.concurrency is not None and running >= self.concurrency:
                break
            if child is None:
                call = self.fn(self.items[index])
                self.children[index] = run.start_branch(call, f"map() item {index}")
                running += 1
        if running:
            return WaitBranches()
        run.release_branches(started)
        return Deliver([o[1] for o in outcomes])

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
