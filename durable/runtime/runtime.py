"""DurableRuntime: runs an instance's call stack, saving it at every suspension that needs it.

A trampoline over an explicit stack of frames (no Python recursion, so
durable recursion depth is not bounded by the interpreter's stack). Each
turn runs one code block of the top frame and acts on what it returns:
jump, await (push a frame for user code, await inline otherwise), return,
raise (dispatched through the frame's exception table), or pause.

State is saved when an instance starts, after every completed durable call
(so a finished call never runs again), at every pause, and when it ends.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..clock import SYSTEM_CLOCK, Clock, as_datetime
from ..errors import (
    CANCEL_EVENT,
    Cancelled,
    FailedInstanceError,
    IncompatibleStateError,
    InstanceTerminated,
    PauseForEventException,
    SerializationError,
    UnknownInstanceError,
    UnsupportedPauseError,
)
from ..primitives.base import Deliver, Primitive, Suspend, Throw, WaitBranches
from ..primitives.control import child_event
from ..primitives.events import pause_wait
from ..primitives.fanout import FANOUTS
from . import envelope
from .actions import AWAIT, PAUSE, RAISE, RETURN, Thrown
from .calls import frame_for
from .fibers import Checkpoints, Fiber, branch_frame
from .handling import INTERNAL_CODES, active_errors, await_within, call_within
from .stack import CallStack

if TYPE_CHECKING:
    from ..backends import OrchestrationBackend
    from ..program import DurableProgram
    from .frame import FunctionCall


ENDED = (envelope.COMPLETED, envelope.FAILED, envelope.TERMINATED)
CANCEL_CHECK_SECONDS = 1.0  # how often a running instance looks for a Client.cancel


class DurableRuntime:
    """Drives one instance of a durable program against an orchestration backend."""

    def __init__(self, program: DurableProgram, backend: OrchestrationBackend,
                 instance_id: str | None = None, *, save_every_await: bool = False) -> None:
        self.program = program
        self.backend = backend
        self.instance_id = instance_id or str(uuid.uuid4())
        self.save_every_await = save_every_await
        self.clock: Clock = getattr(backend, "clock", None) or SYSTEM_CLOCK
        self.root = Fiber(self, 0, CallStack(), None)  # the main fiber
        self.fibers: dict[int, Fiber] = {}  # the branches of fan-outs, by id
        self._next_fiber = 1
        self._completions = 0  # branches ended so far: orders their outcomes
        self._checkpoints: Checkpoints | None = None  # while branches exist
        self._woken: list[Fiber] = []  # parked fibers a cancellation made runnable
        self._resuming = False  # the first primitive advanced after loading a paused state
        self._progress = False  # something ran or changed since the state was loaded
        self.custom_status: Any = None  # set_status(): what clients see
        self._parent: str | None = None  # the instance that started this one (start_child)
        self._children = 0  # children started with a default id, to number the next
        self._cancelled: Cancelled | None = None  # to raise at the next await of a running fiber
        self._cancel_checked = time.monotonic()  # a running instance looks for a cancel now and then
        self._saves = 0
        self._consumed: list[str] = []  # events taken since the last snapshot
        self._saving: list[str] = []  # events in a snapshot being written

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Start the instance, or continue it from its saved state (``args`` are then ignored)."""
        state = await self.backend.load_state(self.instance_id)
        if state is None:
            await self._store(self.initial_state(*args, **kwargs))
            return await self._schedule([self.root])
        envelope.check(state, self.program.key, self.instance_id)
        self._saves = state.get("saves", 0)
        self.custom_status = state.get("custom_status")
        self._parent = state.get("parent")
        self._children = state.get("children", 0)
        status = state["status"]
        if status in ENDED:
            return outcome(state, self.instance_id)
        self._load_fibers(state)
        loaded = [self.root, *self.fibers.values()]
        for fiber in loaded:
            fiber.started = True  # accounted for here: runnable below, or parked
        await self._take_cancellation()
        for fiber in loaded:
            if fiber.outcome is None and fiber.top.awaiting is not None:
                await self._advance(fiber, fiber.top, resuming=status == envelope.PAUSED)
        self._woken = []
        return await self._schedule([f for f in (self.root, *self.fibers.values())
                                     if f.outcome is None and f.top.awaiting is None])

    @property
    def call_stack(self) -> CallStack:
        """The main fiber's frames (a fan-out's branches have stacks of their own)."""
        return self.root.stack

    def initial_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The state a fresh start saves, without running the program: a client creates an
        instance with it for workers to run. Bad arguments raise TypeError, as in a call."""
        self.root.stack = CallStack([self.program.new_frame(args, kwargs)])
        return self._state(envelope.RUNNING)

    async def fail(self, error: BaseException) -> None:
        """Save ``error`` as the instance's outcome. A worker also saves the errors the runtime
        raised before it could save anything (state it cannot load or save), so that such an
        instance ends instead of being retried forever."""
        text = "".join(traceback.format_exception(error))
        await self._save(envelope.FAILED, result=_saveable_error(error), error_traceback=text)
        self._tell_parent()

    def _load_fibers(self, state: dict[str, Any]) -> None:
        try:
            if state.get("fibers") is None:
                self.root.stack = CallStack.from_blobs(state["frames"])
                return
            next_fiber, saved = serialization.loads(state["fibers"])
            fibers = [Fiber.restore(self, fiber) for fiber in saved]
        except IncompatibleStateError:
            raise
        except Exception as error:
            raise IncompatibleStateError(
                f"cannot load the saved state of instance {self.instance_id!r}: "
                f"{type(error).__name__}: {error}{envelope.python_note(state)}",
                function=self.program.qualname,
            ) from error
        self.root = fibers[0]
        self.fibers = {fiber.id: fiber for fiber in fibers[1:]}
        self._next_fiber = next_fiber
        self._completions = max((f.outcome[2] for f in fibers if f.outcome), default=0)
        self._checkpoints = Checkpoints()

    # Scheduling fibers.
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
                    if fiber is self.root and result is not _PARKED:
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
                        result = task.result()
                        if fiber is self.root and result is not _PARKED:
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
            for task in tasks:
                task.cancel()

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

    # The trampoline.
    async def _drive(self, fiber: Fiber) -> Any:
        """Run ``fiber`` until it ends or parks (``_PARKED``); the main fiber's end is the
        instance's: its result is returned, its error raised."""
        stack = fiber.stack
        frames = stack.frames
        fiber.suspended = None
        fiber.started = True
        self._progress = True
        if frames[-1].awaiting is not None and await self._advance(fiber, frames[-1], False):
            return _PARKED  # woken by one of its branches ending, it waits for more
        while True:
            frame = frames[-1]
            if fiber.cancelled and fiber.cancelled is not _THROWN:
                fiber.cancelled = _THROWN
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
                        return _PARKED
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
                await self._save(envelope.RUNNING)
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
                    return _PARKED
            else:  # pragma: no cover - the compiler emits nothing else
                raise AssertionError(f"unknown action {action!r}")

    async def _end_branch(self, fiber: Fiber, succeeded: bool, value: Any) -> Any:
        self._completions += 1
        fiber.outcome = (succeeded, value, self._completions)
        if not fiber.released:
            await self._save(envelope.RUNNING)  # a finished branch is never run again
        return _PARKED

    # Primitives (timers, event waits, steps, fan-outs): what they may ask, and their outcomes.
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
        if not self.fibers:
            self._checkpoints = None  # back to one fiber
        if primitive.checkpoint_result:
            await self._save(envelope.RUNNING)
        return False

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
        if not payload:
            return True, None
        blob = await self.backend.event_payload(self.instance_id, event_id)
        return True, None if blob is None else serialization.loads(blob)

    async def checkpoint(self) -> None:
        await self._save(envelope.RUNNING)

    def set_custom_status(self, value: Any) -> None:
        self.custom_status = value

    async def start_child(self, program: DurableProgram, args: tuple[Any, ...],
                          kwargs: dict[str, Any], instance_id: str | None) -> str:
        """Create a child instance (unless it exists: a parent running again finds it)."""
        if instance_id is None:
            self._children += 1
            instance_id = f"{self.instance_id}/{self._children}"
        if await self.backend.load_state(instance_id) is None:
            state = DurableRuntime(program, self.backend, instance_id).initial_state(*args, **kwargs)
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

    # Saving.
    async def _save(self, status: str, *, waiting_for: str | None = None,
                    waiting_events: list[str] | None = None, wake_at: float | None = None,
                    result: bytes | None = None, error_traceback: str | None = None) -> None:
        if self._checkpoints is not None and status == envelope.RUNNING:
            await self._checkpoints.save(lambda: self._state(status), self._store)
            return
        await self._store(self._state(status, waiting_for=waiting_for,
                                      waiting_events=waiting_events or [], wake_at=wake_at,
                                      result=result, error_traceback=error_traceback))

    def _state(self, status: str, *, waiting_for: str | None = None,
               waiting_events: list[str] | None = None, wake_at: float | None = None,
               result: bytes | None = None, error_traceback: str | None = None) -> dict[str, Any]:
        frames: list[bytes] = []
        fibers: bytes | None = None
        if status in (envelope.RUNNING, envelope.PAUSED):
            try:
                if self.fibers:  # one pickle, so objects the branches share stay shared
                    fibers = serialization.dumps(
                        (self._next_fiber, [f.saved() for f in (self.root, *self.fibers.values())]))
                else:
                    frames = self.call_stack.snapshot()
            except Exception as error:
                raise self._unsaveable(error) from error
        self._saves += 1
        consumed, self._consumed = self._consumed, []
        self._saving.extend(consumed)
        return envelope.envelope(
            self.program.key, status, frames, saves=self._saves, waiting_for=waiting_for,
            custom_status=self.custom_status, parent=self._parent, children=self._children,
            waiting_events=waiting_events or (), wake_at=wake_at, fibers=fibers, result=result, error_traceback=error_traceback,
            consumed_events=consumed,
        )

    async def _store(self, state: dict[str, Any]) -> None:
        await self.backend.save_state(self.instance_id, state)
        for event_id in state["consumed_events"]:
            self._saving.remove(event_id)
        if state["status"] == envelope.RUNNING and self._cancelled is None \
                and time.monotonic() - self._cancel_checked > CANCEL_CHECK_SECONDS:
            self._cancel_checked = time.monotonic()  # a long run sees a cancel within a second
            await self._take_cancellation()

    async def _complete(self, value: Any) -> Any:
        try:
            result = serialization.dumps(value)
        except Exception as error:
            raise SerializationError(
                f"{self.program.qualname}() returned a {type(value).__qualname__}, which cannot be "
                f"saved as the instance's result: {error}",
                function=self.program.qualname, type_name=type(value).__qualname__,
            ) from error
        await self._save(envelope.COMPLETED, result=result)
        self._tell_parent()
        return value

    async def _fail(self, error: BaseException) -> Any:
        await self.fail(error)
        raise error

    def _tell_parent(self) -> None:
        """An ended child wakes its parent (which also rechecks now and then, should this
        process die before it tells)."""
        publish = getattr(self.backend, "publish_event", None)
        if self._parent is not None and publish is not None:
            publish(self._parent, child_event(self.instance_id))

    def _unsaveable(self, error: Exception) -> SerializationError:
        """Name the variable that could not be saved."""
        every = [frame for fiber in (self.root, *self.fibers.values()) for frame in fiber.stack.frames]
        for frame in reversed(every):
            values, shared = frame.saved_variables()
            candidates = {**values, **shared, "<delivered>": frame.delivery,
                          "<awaiting>": frame.awaiting}
            for name, value in candidates.items():
                problem = serialization.why_unpicklable(value)
                if problem is None:
                    continue
                function = frame.function
                if name == "<delivered>":
                    what = "the value being delivered"
                elif name == "<awaiting>":
                    what = f"what it awaits ({frame.awaiting.describe()}: its arguments or options)"
                else:
                    what = function.describe(name)
                return SerializationError(
                    f"cannot save the state of {function.qualname}() at line {frame.line}: "
                    f"{what} is a {type(value).__qualname__}, which cannot be serialised ({problem}). "
                    "Nothing was saved; drop the reference (del) or keep only serialisable data "
                    "across suspension points.",
                    function=function.qualname, variable=name, type_name=type(value).__qualname__,
                )
        return SerializationError(f"cannot save the state of this instance: {error}")


_INTERNAL = {DurableRuntime._drive.__code__, *INTERNAL_CODES}
_PARKED = object()  # what _drive returns for a fiber that waits or has ended as a branch
_THROWN = "thrown"  # Fiber.cancelled once the CancelledError was raised in it


def _clean(error: BaseException, delivered: Any) -> None:
    """Drop the runtime's own frames from a traceback and undo what re-raising changed."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code in _INTERNAL:
        tb = tb.tb_next
    error.__traceback__ = tb
    if delivered.__class__ is Thrown and delivered.error is error:
        error.__context__ = delivered.context


def _saveable_error(error: BaseException) -> bytes:
    try:
        blob = serialization.dumps(error)
        serialization.loads(blob)
        return blob
    except Exception:
        return serialization.dumps(FailedInstanceError(type(error).__qualname__, str(error)))


def outcome(state: dict[str, Any], instance_id: str) -> Any:
    """An ended instance's result, or its error raised: for a runtime and for a client."""
    status = state["status"]
    if status == envelope.COMPLETED:
        return serialization.loads(state["result"])
    if status == envelope.FAILED:
        raise _stored_error(state)
    if status == envelope.TERMINATED:
        raise InstanceTerminated(instance_id, state.get("reason"))
    raise ValueError(f"instance {instance_id!r} has not ended (it is {status})")


def _stored_error(state: dict[str, Any]) -> BaseException:
    error = serialization.loads(state["result"])
    if state.get("error_traceback") and isinstance(error, BaseException):
        error.add_note("Traceback of the run that failed:\n" + state["error_traceback"].rstrip())
    return error

