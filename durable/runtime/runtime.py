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

import traceback
import uuid
from typing import TYPE_CHECKING, Any

from .. import serialization
from ..clock import SYSTEM_CLOCK, Clock, as_datetime
from ..errors import (
    FailedInstanceError,
    IncompatibleStateError,
    InstanceTerminated,
    PauseForEventException,
    SerializationError,
    UnsupportedPauseError,
)
from ..primitives.base import Deliver, Primitive, Suspend
from ..primitives.events import pause_wait
from . import envelope
from .actions import AWAIT, PAUSE, RAISE, RETURN, Thrown
from .calls import frame_for
from .handling import INTERNAL_CODES, active_errors, await_within, call_within
from .stack import CallStack

if TYPE_CHECKING:
    from ..backends import OrchestrationBackend
    from ..program import DurableProgram
    from .frame import FunctionCall


ENDED = (envelope.COMPLETED, envelope.FAILED, envelope.TERMINATED)


class DurableRuntime:
    """Drives one instance of a durable program against an orchestration backend."""

    def __init__(self, program: DurableProgram, backend: OrchestrationBackend,
                 instance_id: str | None = None, *, save_every_await: bool = False) -> None:
        self.program = program
        self.backend = backend
        self.instance_id = instance_id or str(uuid.uuid4())
        self.save_every_await = save_every_await
        self.call_stack = CallStack()
        self.clock: Clock = getattr(backend, "clock", None) or SYSTEM_CLOCK
        self._resuming = False  # the first primitive advanced after loading a paused state
        self._saves = 0
        self._consumed: list[str] = []
        self._last_saved: dict[str, Any] | None = None

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Start the instance, or continue it from its saved state (``args`` are then ignored)."""
        state = await self.backend.load_state(self.instance_id)
        if state is None:
            await self._store(self.initial_state(*args, **kwargs))
        else:
            envelope.check(state, self.program.key, self.instance_id)
            self._saves = state.get("saves", 0)
            self._last_saved = state
            status = state["status"]
            if status in ENDED:
                return outcome(state, self.instance_id)
            self.call_stack = self._load_stack(state)
            top = self.call_stack.frames[-1]
            if top.awaiting is not None:
                await self._advance(top, resuming=status == envelope.PAUSED)
        return await self._drive()

    def initial_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The state a fresh start saves, without running the program: a client creates an
        instance with it for workers to run. Bad arguments raise TypeError, as in a call."""
        self.call_stack = CallStack([self.program.new_frame(args, kwargs)])
        return self._state(envelope.RUNNING)

    async def fail(self, error: BaseException) -> None:
        """Save ``error`` as the instance's outcome. A worker also saves the errors the runtime
        raised before it could save anything (state it cannot load or save), so that such an
        instance ends instead of being retried forever."""
        text = "".join(traceback.format_exception(error))
        await self._save(envelope.FAILED, result=_saveable_error(error), error_traceback=text)

    def _load_stack(self, state: dict[str, Any]) -> CallStack:
        try:
            return CallStack.from_blobs(state["frames"])
        except IncompatibleStateError:
            raise
        except Exception as error:
            raise IncompatibleStateError(
                f"cannot load the saved state of instance {self.instance_id!r}: "
                f"{type(error).__name__}: {error}{envelope.python_note(state)}",
                function=self.program.qualname,
            ) from error

    # The trampoline.
    async def _drive(self) -> Any:
        stack = self.call_stack
        frames = stack.frames
        while True:
            frame = frames[-1]
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
                callee = frame_for(awaitable)
                errors = active_errors(frame, block.handling) if handled else ()
                if callee is not None:
                    callee.inherited = errors
                    stack.push(callee)
                    continue
                if isinstance(awaitable, Primitive):
                    frame.awaiting = awaitable.begin()
                    await self._advance(frame, resuming=False)
                    continue
                try:
                    frame.delivery = await (await_within(errors, awaitable) if errors else awaitable)
                except BaseException as error:
                    _clean(error, None)
                    if isinstance(error, PauseForEventException):
                        raise UnsupportedPauseError.for_error(error) from error
                    frame.delivery = Thrown(error)
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
                    return await self._fail(error)
                frames[-1].delivery = Thrown(error)
                await self._save(envelope.RUNNING)
            elif kind == RETURN:
                stack.pop()
                if not frames:
                    return await self._complete(action[1])
                frames[-1].delivery = action[1]
                await self._save(envelope.RUNNING)
            elif kind == PAUSE:
                frame.pc = action[1]
                frame.awaiting = pause_wait(action[2])
                await self._advance(frame, resuming=False)
            else:  # pragma: no cover - the compiler emits nothing else
                raise AssertionError(f"unknown action {action!r}")

    # Primitives (timers, event waits, steps): what they may ask of the runtime, and their outcomes.
    async def _advance(self, frame: FunctionCall, resuming: bool) -> None:
        """Drive the primitive ``frame`` awaits: hand the frame its outcome, or pause here."""
        primitive = frame.awaiting
        self._resuming = resuming
        try:
            outcome = await primitive.advance(self)
        finally:
            self._resuming = False
        if outcome.__class__ is Suspend:
            if outcome.changed or not resuming:
                await self._save(envelope.PAUSED, waiting_for=outcome.event,
                                 wake_at=outcome.wake_at)
            until = None if outcome.wake_at is None else as_datetime(outcome.wake_at)
            raise PauseForEventException(outcome.event, until)
        frame.awaiting = None
        frame.delivery = outcome.value if outcome.__class__ is Deliver else Thrown(outcome.error)
        if primitive.checkpoint_result:
            await self._save(envelope.RUNNING)

    async def take_event(self, name: str, payload: bool) -> tuple[bool, Any]:
        """Consume a published ``name`` event (recorded by the next save): (found, payload)."""
        take = getattr(self.backend, "take_event", None)
        if take is None:
            # A backend with only the seed's interface: its wait_for_event blocks until
            # the event arrives, so it is only asked when the caller resumes the instance.
            if self._resuming:
                await self.backend.wait_for_event(self.instance_id, name)
            return self._resuming, None
        event_id = await take(self.instance_id, name, exclude=self._consumed)
        if event_id is None:
            return False, None
        self._consumed.append(event_id)
        if not payload:
            return True, None
        blob = await self.backend.event_payload(self.instance_id, event_id)
        return True, None if blob is None else serialization.loads(blob)

    async def checkpoint(self) -> None:
        await self._save(envelope.RUNNING)

    # Saving.
    async def _save(self, status: str, *, waiting_for: str | None = None,
                    wake_at: float | None = None, result: bytes | None = None,
                    error_traceback: str | None = None) -> None:
        await self._store(self._state(status, waiting_for=waiting_for, wake_at=wake_at,
                                      result=result, error_traceback=error_traceback))

    def _state(self, status: str, *, waiting_for: str | None = None, wake_at: float | None = None,
               result: bytes | None = None, error_traceback: str | None = None) -> dict[str, Any]:
        frames: list[bytes] = []
        if status in (envelope.RUNNING, envelope.PAUSED):
            try:
                frames = self.call_stack.snapshot()
            except Exception as error:
                raise self._unsaveable(error) from error
        self._saves += 1
        return envelope.envelope(
            self.program.key, status, frames, saves=self._saves, waiting_for=waiting_for,
            wake_at=wake_at, result=result, error_traceback=error_traceback, consumed_events=self._consumed,
        )

    async def _store(self, state: dict[str, Any]) -> None:
        await self.backend.save_state(self.instance_id, state)
        self._last_saved = state
        self._consumed = []

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
        return value

    async def _fail(self, error: BaseException) -> Any:
        await self.fail(error)
        raise error

    def _unsaveable(self, error: Exception) -> SerializationError:
        """Name the variable that could not be saved."""
        for frame in reversed(self.call_stack.frames):
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

