"""The trampoline: runs a fiber's frames block by block and acts on what each block returns.

No Python recursion (durable recursion depth is not bounded by the
interpreter's stack): each turn runs one code block of the top frame and acts
on its action: jump, await (push a frame for user code, drive a primitive,
await anything else inline), return, raise (dispatched through the frame's
exception table), or pause. Also what primitives may ask of the instance.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import history, serialization
from ..errors import (
    IncompatibleStateError,
    PauseForEventException,
    UnknownInstanceError,
    UnsupportedPauseError,
)
from ..primitives.base import Deliver, Primitive, Suspend, Throw, WaitBranches
from ..primitives.events import pause_wait
from . import envelope
from . import summary as summaries
from .actions import AWAIT, PAUSE, RAISE, RETURN, Thrown
from .calls import frame_for
from .fibers import Checkpoints, Fiber
from .handling import INTERNAL_CODES, active_errors, await_within, call_within
from .helpers import unbound_local
from .outcomes import ENDED, outcome
from .scheduler import PARKED, THROWN

if TYPE_CHECKING:
    from types import CodeType

    from ..program import DurableProgram
    from .code import CompiledFunction
    from .frame import FunctionCall


class Trampoline:
    """The part of ``DurableRuntime`` that runs frames and drives primitives; its state is the runtime's
    (``DurableRuntime.__init__``)."""

    async def _drive(self, fiber: Fiber) -> Any:
        """Run ``fiber`` until it ends or parks (``PARKED``); the main fiber's end is the
        instance's: its result is returned, its error raised."""
        stack = fiber.stack
        frames = stack.frames
        fiber.suspended = None
        fiber.started = True
        self._progress = True
        if frames[-1].awaiting is not None and await self._advance(fiber, frames[-1], False):
            return PARKED  # woken by one of its branches ending, it waits for more
        while True:
            frame = frames[-1]
            if fiber.cancelled and fiber.cancelled is not THROWN:
                fiber.cancelled = THROWN
                frame.delivery = Thrown(asyncio.CancelledError())
            pc = frame.pc
            block = frame.function.blocks[pc]
            delivered = frame.delivery
            frame.delivery = None
            handled = block.handling or frame.inherited
            try:
                if handled:
                    action = call_within(active_errors(frame, block.handling), frame.block(pc), delivered)
                else:
                    action = frame.block(pc)(delivered)
            except BaseException as error:
                _clean(error, delivered)
                if error.__class__ is NameError:
                    error = _as_local(error, frame.function, block.code)
                if isinstance(error, PauseForEventException) and delivered.__class__ is not Thrown:
                    raise UnsupportedPauseError.for_error(error) from error
                action = (RAISE, error)

            if action.__class__ is int:
                frame.pc = action
                continue
            kind = action[0]
            if kind == AWAIT:
                frame.pc = action[1]
                awaitable = action[2]
                if self._cancelled is not None:  # Client.cancel: raised here instead
                    frame.delivery = self._cancel_at(awaitable)
                    continue
                callee = frame_for(awaitable)
                errors = active_errors(frame, block.handling) if handled else ()
                if callee is not None:
                    callee.inherited = errors
                    stack.push(callee)
                    continue
                if isinstance(awaitable, Primitive):
                    frame.awaiting = awaitable.begin()
                    if await self._advance(fiber, frame, resuming=False):
                        return PARKED
                    continue
                try:
                    awaited = await_within(errors, awaitable) if errors else awaitable
                    if self._checkpoints is None:
                        frame.delivery = await awaited
                    else:
                        frame.delivery = await self._checkpoints.flight(awaited)
                except BaseException as error:
                    _clean(error, None)
                    if isinstance(error, PauseForEventException):
                        raise UnsupportedPauseError.for_error(error) from error
                    frame.delivery = Thrown(error)
                if self._checkpoints is not None:
                    await self._checkpoints.settle()
                if self.save_every_await:
                    await self._save(envelope.RUNNING)
            elif kind == RAISE:
                error = action[1]
                if block.handler is not None:
                    target, variable, is_finally = block.handler
                    frame.cells[variable].cell_contents = (RAISE, error) if is_finally else error
                    frame.pc = target
                    continue
                stack.pop()
                if not frames:
                    if fiber is self.root:
                        return await self._fail(error)
                    return await self._end_branch(fiber, False, error)
                frames[-1].delivery = Thrown(error)
                await self._save(envelope.RUNNING, raising=True)
            elif kind == RETURN:
                stack.pop()
                if not frames:
                    if fiber is self.root:
                        return await self._complete(action[1])
                    return await self._end_branch(fiber, True, action[1])
                frames[-1].delivery = action[1]
                await self._save(envelope.RUNNING)
            elif kind == PAUSE:
                frame.pc = action[1]
                if self._cancelled is not None:
                    frame.delivery = self._cancel_at(None)
                    continue
                frame.awaiting = pause_wait(action[2])
                if await self._advance(fiber, frame, resuming=False):
                    return PARKED
            else:  # pragma: no cover - the compiler emits nothing else
                raise AssertionError(f"unknown action {action!r}")

    async def _advance(self, fiber: Fiber, frame: FunctionCall, resuming: bool) -> bool:
        """Drive the primitive ``frame`` awaits: hand the frame its outcome (False), or park
        the fiber (True) on a pause or on its branches."""
        primitive = frame.awaiting
        self._resuming = resuming
        try:
            outcome = await primitive.advance(fiber)
        finally:
            self._resuming = False
        kind = outcome.__class__
        if kind is Suspend:
            fiber.suspended = outcome
            self._progress = self._progress or outcome.changed or not resuming
            return True
        if kind is WaitBranches:
            if self._checkpoints is None and self.fibers:
                self._checkpoints = Checkpoints()
            return True
        frame.awaiting = None
        frame.delivery = outcome.value if kind is Deliver else Thrown(outcome.error)
        if self._checkpoints is not None and not self.fibers:
            # Back to one fiber, whose saves are made directly: after those its ended branches
            # asked for (still being written), never before.
            checkpoints, self._checkpoints = self._checkpoints, None
            await checkpoints.drain()
        if primitive.checkpoint_result:
            await self._save(envelope.RUNNING)
        return False

    async def take_event(self, name: str, payload: bool) -> tuple[bool, Any]:
        """Consume a published ``name`` event (recorded by the next save): (found, payload)."""
        take = getattr(self.backend, "take_event", None)
        if take is None:
            # A backend with only the seed's interface: its wait_for_event blocks until
            # the event arrives, so it is only asked when the caller resumes the instance.
            if self._resuming:
                await self.backend.wait_for_event(self.instance_id, name)
            return self._resuming, None
        event_id = await take(self.instance_id, name, exclude=[*self._saving, *self._consumed])
        if event_id is None:
            return False, None
        self._consumed.append(event_id)
        value = await self._payload(name, event_id) if payload else None
        if not name.startswith(summaries.INTERNAL_EVENTS):
            self.record(history.EVENT_CONSUMED, event=name,
                        payload=None if value is None else summaries.bounded_repr(value))
        return True, value

    async def _payload(self, name: str, event_id: str) -> Any:
        blob = await self.backend.event_payload(self.instance_id, event_id)
        if blob is None:
            return None
        try:
            return serialization.loads(blob)
        except Exception as error:  # the event stays: a worker that can load it takes it
            raise IncompatibleStateError(
                f"cannot load the payload of event {name!r} (id {event_id}) published to "
                f"instance {self.instance_id!r}: {type(error).__name__}: {error}",
                function=self.program.qualname,
            ) from error

    async def checkpoint(self) -> None:
        await self._save(envelope.RUNNING)

    async def call_sync(self, fn: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
        """Run a plain function (a sync step) in a thread, so that it blocks neither the other
        instances and branches on this loop nor the renewal of their leases: in the backend's
        ``executor`` (a worker's pool, as large as its concurrency), else in durable's own."""
        executor = getattr(self.backend, "executor", None) or default_executor()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    def set_custom_status(self, value: Any) -> None:
        self.custom_status = value

    async def start_child(self, program: DurableProgram, args: tuple[Any, ...],
                          kwargs: dict[str, Any], instance_id: str | None) -> str:
        """Create a child instance (unless it exists: a parent running again finds it)."""
        if instance_id is None:
            self._children += 1
            instance_id = f"{self.instance_id}/{self._children}"
        if await self.backend.load_state(instance_id) is None:
            state = type(self)(program, self.backend, instance_id).initial_state(*args, **kwargs)
            state["parent"] = self.instance_id
            create = getattr(getattr(self.backend, "state_store", None), "create", None)
            if create is not None:
                await create(instance_id, state)
            else:
                await self.backend.save_state(instance_id, state)
        return instance_id

    async def child_outcome(self, instance_id: str) -> Deliver | Throw | None:
        state = await self.backend.load_state(instance_id)
        if state is None:
            return Throw(UnknownInstanceError(instance_id, "this instance's store"))
        if state["status"] not in ENDED:
            return None
        try:
            return Deliver(outcome(state, instance_id))
        except BaseException as error:
            return Throw(error)


DEFAULT_THREADS = 100  # sync steps running at once outside a worker (a worker's: its concurrency)
_default_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def default_executor() -> ThreadPoolExecutor:
    """The threads sync steps run in when the backend brings none (``DurableBackend`` in
    process). Not asyncio's default executor: stores use that for their own I/O, which steps
    that block for long must not hold up."""
    global _default_executor
    with _executor_lock:
        if _default_executor is None:
            _default_executor = ThreadPoolExecutor(DEFAULT_THREADS,
                                                   thread_name_prefix="durable step")
        return _default_executor


_INTERNAL = {Trampoline._drive.__code__, *INTERNAL_CODES}
_PARKED = object()  # what _drive returns for a fiber that waits or has ended as a branch
_THROWN = "thrown"  # Fiber.cancelled once the CancelledError was raised in it


def _as_local(error: NameError, function: CompiledFunction, code: CodeType) -> BaseException:
    """``error`` as the block's user sees it (``helpers.unbound_local``)."""
    tb = error.__traceback__
    if tb is None or tb.tb_frame.f_code is not code:
        return error
    return unbound_local(error, function.local_names) or error


def _clean(error: BaseException, delivered: Any) -> None:
    """Drop the runtime's own frames from a traceback and undo what re-raising changed."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code in _INTERNAL:
        tb = tb.tb_next
    error.__traceback__ = tb
    if delivered.__class__ is Thrown and delivered.error is error:
        error.__context__ = delivered.context
