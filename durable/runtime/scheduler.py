"""Scheduling: which of an instance's fibers runs, which are parked, and when all of them wait.

One fiber runs without a task (the common case); with branches, each runnable
fiber runs in an asyncio task of its own. A fiber parks on a primitive that
waits or on its branches; when every fiber waits, the instance pauses (saved,
unless nothing changed since it was loaded). A ``Client.cancel`` raises
``Cancelled`` where each fiber waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from .. import history
from ..clock import as_datetime
from ..errors import CANCEL_EVENT, Cancelled, PauseForEventException
from ..primitives.fanout import FANOUTS
from . import envelope
from .actions import Thrown
from .fibers import Fiber, branch_frame
from .stack import CallStack

PARKED = object()  # what a fiber's run returns when it waits or has ended as a branch
THROWN = "thrown"  # Fiber.cancelled once the CancelledError was raised in it


class Scheduler:
    """The part of ``DurableRuntime`` that schedules its fibers; its state is the runtime's
    (``DurableRuntime.__init__``)."""

    async def _schedule(self, runnable: list[Fiber]) -> Any:
        """Run fibers until the main one ends (its result) or every fiber waits (a pause)."""
        tasks: dict[asyncio.Task[Any], Fiber] = {}
        again: set[Fiber] = set()  # woken while it ran: look at it again once it parks
        queue = list(dict.fromkeys(runnable))
        try:
            while True:
                if not tasks and len(queue) == 1:  # one fiber: no task needed (the common case)
                    fiber = queue.pop()
                    result = await self._drive(fiber)
                    if fiber is self.root and result is not PARKED:
                        return result
                    woken = self._woken_by(fiber)
                else:
                    for fiber in queue:
                        tasks[asyncio.ensure_future(self._drive(fiber))] = fiber
                    queue = []
                    if not tasks:
                        return await self._pause()
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    woken = []
                    for task in done:
                        fiber = tasks.pop(task)
                        if task.cancelled() and fiber is not self.root:
                            continue  # stopped by the instance's last save (Checkpoints.closed)
                        result = task.result()
                        if fiber is self.root and result is not PARKED:
                            return result
                        woken += self._woken_by(fiber)
                        if fiber in again:
                            again.discard(fiber)
                            woken.append(fiber)
                running = set(tasks.values())
                for fiber in woken:
                    if fiber in running:
                        again.add(fiber)
                    elif fiber.outcome is None and fiber not in queue:
                        queue.append(fiber)
                if not queue and not tasks:
                    return await self._pause()
        finally:
            if tasks or self._checkpoints is not None:
                await self._stop_fibers(tasks)

    async def _stop_fibers(self, tasks: dict[asyncio.Task[Any], Fiber]) -> None:
        """The run ends (the instance returned, paused or failed, or its worker dropped it):
        cancel the fibers still running and wait for them and for the saves being written, so
        that nothing of this run goes on after it (their store may be closed next); their
        errors are dropped, the run's outcome is decided."""
        checkpoints = self._checkpoints
        if checkpoints is not None:
            checkpoints.closed = True  # a fiber that survives its cancellation saves nothing
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if checkpoints is not None:
            await checkpoints.close()

    def _woken_by(self, fiber: Fiber) -> list[Fiber]:
        """The fibers that can run now that ``fiber`` has parked or ended."""
        woken, self._woken = self._woken, []
        if fiber.outcome is None:  # parked: on a primitive, or on branches it just started
            return woken + [f for f in self.fibers.values() if f.parent == fiber.id
                            and not f.started and f.outcome is None and f.top.awaiting is None]
        if fiber.released:
            del self.fibers[fiber.id]
            return woken
        parent = self.root if fiber.parent == 0 else self.fibers[fiber.parent]
        return [*woken, parent]  # its fan-out looks at the outcome when it runs

    async def _take_cancellation(self) -> bool:
        """A ``Client.cancel`` was published: raise ``Cancelled`` in every fiber that waits on
        a primitive, where it waits (so its except and finally blocks run)."""
        if getattr(self.backend, "take_event", None) is None:
            return False
        found, reason = await self.take_event(CANCEL_EVENT, True)
        if not found:
            return False
        error = Cancelled(self.instance_id, reason)
        self.record(history.CANCELLED, reason=reason)
        for fiber in (self.root, *self.fibers.values()):
            awaiting = fiber.top.awaiting if fiber.outcome is None else None
            if awaiting is not None and not isinstance(awaiting, FANOUTS):
                fiber.top.awaiting = None
                fiber.top.delivery = Thrown(error)
                fiber.suspended = None
                self._woken.append(fiber)
                self._progress = True
        if not self._woken:  # nobody waits: the fiber that runs gets it at its next await
            self._cancelled = error
        return True

    def _cancel_at(self, awaitable: Any) -> Thrown:
        """What an await delivers once the instance was cancelled while it ran: the error."""
        if asyncio.iscoroutine(awaitable):
            awaitable.close()  # never started
        error, self._cancelled = self._cancelled, None
        assert error is not None
        return Thrown(error)

    async def _pause(self) -> Any:
        """Every fiber waits: save that (unless nothing changed since it was loaded), raise."""
        if await self._take_cancellation():
            self._woken = []
            return await self._schedule([f for f in (self.root, *self.fibers.values())
                                         if f.outcome is None and f.top.awaiting is None])
        waits = [f.suspended for f in (self.root, *self.fibers.values()) if f.suspended]
        events = [wait.event for wait in waits if wait.event is not None]
        wakes = [wait.wake_at for wait in waits if wait.wake_at is not None]
        wake_at = min(wakes, default=None)
        if self._progress:
            await self._save(envelope.PAUSED, waiting_for=events[0] if events else None,
                             waiting_events=[*events, CANCEL_EVENT], wake_at=wake_at)
        until = None if wake_at is None else as_datetime(wake_at)
        raise PauseForEventException(events[0] if events else None, until)

    async def _end_branch(self, fiber: Fiber, succeeded: bool, value: Any) -> Any:
        self._completions += 1
        fiber.outcome = (succeeded, value, self._completions)
        if not fiber.released:
            await self._save(envelope.RUNNING)  # a finished branch is never run again
        return PARKED

    def start_branch(self, parent: Fiber, call: Awaitable[Any], where: str) -> int:
        fiber = Fiber(self, self._next_fiber, CallStack([branch_frame(call, where)]), parent.id)
        self._next_fiber += 1
        self.fibers[fiber.id] = fiber
        return fiber.id

    def release(self, branches: Iterable[int]) -> None:
        """Nobody waits for these branches any more: forget the ended ones, let the others run
        to their end unobserved."""
        for branch in branches:
            fiber = self.fibers.get(branch)
            if fiber is None:
                continue
            if fiber.outcome is not None:
                del self.fibers[branch]
            else:
                fiber.released = True

    def cancel(self, branches: Iterable[int]) -> None:
        """Raise CancelledError in the branches that have not ended; the caller waits for them."""
        for branch in branches:
            fiber = self.fibers.get(branch)
            if fiber is not None and fiber.outcome is None and not fiber.cancelled:
                self._cancel(fiber)

    def _cancel(self, fiber: Fiber) -> None:
        """Raise CancelledError in ``fiber`` where it stands (and in the branches it awaits)."""
        fiber.cancelled = True
        if fiber.top.awaiting is None:
            return  # running: it gets the error before its next block
        children = [f.id for f in self.fibers.values() if f.parent == fiber.id]
        self.cancel(children)  # it stops waiting for them: they end unobserved
        self.release(children)
        fiber.top.awaiting = None
        self._woken.append(fiber)
