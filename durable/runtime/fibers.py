"""Fibers: the stacks of frames one instance runs, the main one and the branches of a fan-out.

An instance starts with one fiber. ``gather``, ``first`` and ``map`` start a
branch fiber per call; the runtime runs runnable fibers concurrently (one
asyncio task each) and parks a fiber that waits for a primitive or for its
branches. While branches exist, the whole tree is saved as one pickle (so
objects shared between branches stay shared), and every save waits for a
moment when no fiber is in the middle of an operation that cannot be saved
half-way (an inline await of a library coroutine, a step's function).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..primitives.base import Primitive, Suspend
from .frame import FunctionCall
from .migration import Restoring
from .stack import CallStack

if TYPE_CHECKING:
    from .runtime import DurableRuntime

Outcome = tuple[bool, Any, int]  # succeeded, result or error, completion order


class Fiber:
    """One stack of frames and where it stands; also what its primitives may ask for."""

    __slots__ = ("cancelled", "id", "outcome", "parent", "released", "runtime", "stack",
                 "started", "suspended")

    def __init__(self, runtime: DurableRuntime, fiber_id: int, stack: CallStack,
                 parent: int | None) -> None:
        self.runtime = runtime
        self.id = fiber_id
        self.stack = stack
        self.parent = parent
        self.outcome: Outcome | None = None
        self.suspended: Suspend | None = None  # parked on a primitive that paused
        self.released = False  # nobody waits for its outcome: drop it once it ends
        self.cancelled: bool | str = False  # asyncio.CancelledError is to be raised in it
        self.started = False  # has run in this process (a new branch has not yet)

    @property
    def top(self) -> FunctionCall:
        return self.stack.frames[-1]

    def saved(self) -> tuple[Any, ...]:
        return (self.id, self.parent, [frame.saved_state() for frame in self.stack.frames],
                self.outcome, self.released, self.cancelled)

    @classmethod
    def restore(cls, runtime: DurableRuntime, saved: tuple[Any, ...], restoring: Restoring) -> Fiber:
        fiber_id, parent, frames, outcome, released, cancelled = saved
        stack = CallStack([FunctionCall.restore(f, restoring) for f in frames])
        fiber = cls(runtime, fiber_id, stack, parent)
        fiber.outcome, fiber.released, fiber.cancelled = outcome, released, cancelled
        return fiber

    # What primitives may ask (the Run protocol).
    @property
    def clock(self) -> Clock:
        return self.runtime.clock

    @property
    def instance_id(self) -> str:
        return self.runtime.instance_id

    @property
    def program(self) -> str:
        return self.runtime.program.key

    async def take_event(self, name: str, payload: bool) -> tuple[bool, Any]:
        return await self.runtime.take_event(name, payload)

    async def checkpoint(self) -> None:
        await self.runtime.checkpoint()

    async def call_sync(self, fn: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
        return await self.runtime.call_sync(fn, args, kwargs)

    def start_branch(self, call: Awaitable[Any], where: str) -> int:
        return self.runtime.start_branch(self, call, where)

    def branch_outcome(self, branch: int) -> Outcome | None:
        return self.runtime.fibers[branch].outcome

    def set_custom_status(self, value: Any) -> None:
        self.runtime.set_custom_status(value)

    def record(self, kind: str, **data: Any) -> None:
        self.runtime.record(kind, **data)

    async def start_child(self, program: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                          instance_id: str | None) -> str:
        return await self.runtime.start_child(program, args, kwargs, instance_id)

    async def child_outcome(self, instance_id: str) -> Any:
        return await self.runtime.child_outcome(instance_id)

    def release_branches(self, branches: Iterable[int]) -> None:
        self.runtime.release(branches)

    def cancel_branches(self, branches: Iterable[int]) -> None:
        self.runtime.cancel(branches)

    def __repr__(self) -> str:
        return f"<Fiber {self.id} of {self.parent}: {self.stack.frames!r}>"


class Checkpoints:
    """Saves while branches run: at a quiet moment, one at a time, in the order taken.

    The instance's last save (it pauses, finishes or fails) goes through here too, after every
    save taken before it; once it is made, nothing more is saved (``closed``): a save still
    waiting for a quiet moment is dropped, and a fiber that asks for one is cancelled, as its
    task is about to be. Every save's error reaches the fibers that joined it; one nobody
    waits for any more (they were cancelled) is dropped, never logged as unretrieved.
    """

    def __init__(self) -> None:
        self.flights = 0  # operations in progress that cannot be saved half-way
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._pending: asyncio.Future[None] | None = None
        self._writes = asyncio.Lock()
        self._unfinished: set[asyncio.Future[None]] = set()  # saves not yet written
        self.closed = False

    async def flight(self, awaitable: Awaitable[Any]) -> Any:
        self.flights += 1
        self._quiet.clear()
        try:
            return await awaitable
        finally:
            self.flights -= 1
            if not self.flights:
                self._quiet.set()

    async def settle(self) -> None:
        """Called by a fiber at a point where it can be saved: let a waiting save go first."""
        if self.closed:
            raise asyncio.CancelledError()  # the instance made its last save: stop here
        if self._pending is not None:
            await asyncio.shield(self._pending)

    async def save(self, snapshot: Callable[[], Any],
                   store: Callable[[Any], Awaitable[None]]) -> None:
        """Join the next save (``snapshot()`` makes the state, ``store(state)`` writes it)."""
        if self.closed:
            raise asyncio.CancelledError()
        if self._pending is None:
            self._pending = self._track(self._save_when_quiet(snapshot, store))
        await asyncio.shield(self._pending)

    async def last(self, state: Any, store: Callable[[Any], Awaitable[None]]) -> None:
        """Write the instance's last state, after the saves taken before it; none after it."""
        self.closed = True
        async with self._writes:
            await store(state)

    async def drain(self) -> None:
        """Wait until every save asked for is written (raising the first one's error): the
        saves that follow are made without this object, and must not overtake them."""
        for save in list(self._unfinished):
            await asyncio.shield(save)

    async def close(self) -> None:
        """The instance stops running here: save nothing more, and wait for the saves being
        written (their errors were the business of fibers that are gone)."""
        self.closed = True
        if self._unfinished:
            await asyncio.gather(*self._unfinished, return_exceptions=True)

    def _track(self, save: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        future = asyncio.ensure_future(save)
        self._unfinished.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, save: asyncio.Future[None]) -> None:
        self._unfinished.discard(save)
        if not save.cancelled():
            save.exception()  # retrieved: the fibers that joined it raise it themselves

    async def _save_when_quiet(self, snapshot: Callable[[], Any],
                               store: Callable[[Any], Awaitable[None]]) -> None:
        while self.flights:
            await self._quiet.wait()
        self._pending = None  # what is asked from now on belongs to the next save
        if self.closed:  # the last save was made meanwhile: this one would undo it
            raise asyncio.CancelledError()  # the fibers that joined it stop, as at ``save``
        state = snapshot()  # every fiber stands where it can be saved
        async with self._writes:
            await store(state)


def branch_frame(call: Awaitable[Any], where: str) -> FunctionCall:
    """The bottom frame of a branch running ``call``."""
    from .calls import frame_for

    frame = frame_for(call)
    if frame is not None:
        return frame
    if isinstance(call, Primitive):
        from ..compiler.registry import compiled
        from .calls import bind

        function = compiled(_await_primitive.__code__, _await_primitive.__globals__)
        return bind(function, _await_primitive, (call,), {})
    kind = type(call).__qualname__
    if asyncio.iscoroutine(call):
        name = getattr(call, "__qualname__", kind)
        call.close()
        raise TypeError(f"{where} is a coroutine of {name}(), which is not durable code, so a "
                        "branch cannot be saved while it runs: call it from an async def of "
                        "your own and pass a call of that")
    raise TypeError(f"{where} must be a call of an async def or a durable primitive, got {kind}")


async def _await_primitive(primitive: Primitive) -> Any:
    """A branch that only awaits a primitive (``gather(sleep(1), wait_for_event("x"))``)."""
    return await primitive
