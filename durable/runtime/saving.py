"""Saving: the state an instance saves (its envelope), when it is written, and how it ends.

State is saved when an instance starts, after every completed durable call
(so a finished call never runs again), at every pause, and when it ends. A
state that cannot be pickled names the variable that could not.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Any

from .. import history, serialization
from ..errors import InstanceEndedError, SerializationError
from ..primitives.control import child_event
from . import envelope
from . import summary as summaries
from .outcomes import saveable_error

CANCEL_CHECK_SECONDS = 1.0  # how often a running instance looks for a Client.cancel
class Saving:
    """The part of ``DurableRuntime`` that saves its state and its outcome; its state is the runtime's
    (``DurableRuntime.__init__``)."""

    async def fail(self, error: BaseException) -> None:
        """Save ``error`` as the instance's outcome. A worker also saves the errors the runtime
        raised before it could save anything (state it cannot load or save), so that such an
        instance ends instead of being retried forever."""
        text = "".join(traceback.format_exception(error))
        shown = f"{type(error).__name__}: {error}"
        self.record(history.FAILED, error=shown, traceback=text[-history.LONGEST:])
        state = self._state(envelope.FAILED, result=saveable_error(error), error_traceback=text,
                            shown=shown)
        if self.last_saved is not None:
            state["retry"] = self.last_saved  # what Client.retry starts from
        if self._checkpoints is None:
            await self._store(state)
        else:
            await self._checkpoints.last(state, self._store)
        self._tell_parent()

    async def _save(self, status: str, *, waiting_for: str | None = None,
                    waiting_events: list[str] | None = None, wake_at: float | None = None,
                    result: bytes | None = None, error_traceback: str | None = None,
                    shown: str | None = None, raising: bool = False) -> None:
        """``raising``: an error is on its way out of a frame; should it fail the instance, a
        retry starts from the last save made before it (which runs the failed call again)."""
        if raising:
            self._raising = True
        if status != envelope.RUNNING:
            self._record_stop(status, waiting_for, wake_at, shown)
        if self._checkpoints is not None:
            if status == envelope.RUNNING:
                await self._checkpoints.save(lambda: self._state(status), self._store)
            else:  # the last save: it must come after the saves branches asked for
                await self._checkpoints.last(self._state(
                    status, waiting_for=waiting_for, waiting_events=waiting_events,
                    wake_at=wake_at, result=result, error_traceback=error_traceback,
                    shown=shown), self._store)
            return
        await self._store(self._state(status, waiting_for=waiting_for,
                                      waiting_events=waiting_events, wake_at=wake_at,
                                      result=result, error_traceback=error_traceback, shown=shown))

    def _state(self, status: str, *, waiting_for: str | None = None,
               waiting_events: list[str] | None = None, wake_at: float | None = None,
               result: bytes | None = None, error_traceback: str | None = None,
               shown: str | None = None) -> dict[str, Any]:
        """``shown``: how a person sees the outcome (the result's repr, the error's line)."""
        frames: list[bytes] = []
        fibers: bytes | None = None
        positions: list[str] | None = None
        if status in (envelope.RUNNING, envelope.PAUSED):
            try:
                if self.fibers:  # one pickle, so objects the branches share stay shared
                    every = [frame for fiber in (self.root, *self.fibers.values())
                             for frame in fiber.stack.frames]
                    fibers = serialization.dumps(
                        (self._next_fiber, [f.saved() for f in (self.root, *self.fibers.values())]),
                        state=True)
                else:
                    every = self.root.stack.frames
                    frames = self.root.stack.snapshot()
            except Exception as error:
                raise self._unsaveable(error) from error
            positions = [frame.function.positions[frame.pc] for frame in every]
        self._saves += 1
        recorded = self._history
        if recorded:  # (most saves record nothing: they keep the one empty list)
            self._history = []
            self._recorded += len(recorded)
        consumed, self._consumed = self._consumed, []
        self._saving.extend(consumed)
        summary = None
        if status != envelope.RUNNING:  # a pause or the end: what a person sees of it
            summary = self._summary(status, waiting_for, waiting_events, wake_at, shown,
                                    error_traceback)
        return envelope.envelope(
            self.program.key, status, frames, saves=self._saves, waiting_for=waiting_for,
            custom_status=self.custom_status, parent=self._parent, children=self._children,
            waiting_events=waiting_events, wake_at=wake_at, fibers=fibers, result=result,
            error_traceback=error_traceback, consumed_events=consumed, positions=positions,
            summary=summary, history=recorded, recorded=self._recorded,
        )

    def _record_stop(self, status: str, waiting_for: str | None, wake_at: float | None,
                     shown: str | None) -> None:
        """The history entry of a save that pauses or ends the run (``fail`` records its own)."""
        if status == envelope.PAUSED:
            frame = self.root.stack.frames[-1] if self.root.stack.frames else None
            self.record(history.PAUSED, waiting_for=waiting_for, until=wake_at,
                        at=None if frame is None else f"{frame.function.filename}:{frame.line}",
                        function=None if frame is None else frame.function.qualname)
        elif status == envelope.COMPLETED:
            self.record(history.FINISHED, result=shown)

    def _summary(self, status: str, waiting_for: str | None, waiting_events: list[str] | None,
                 wake_at: float | None, shown: str | None, error_traceback: str | None) -> str:
        branches = []
        if status == envelope.PAUSED:
            branches = [("main" if fiber is self.root else f"branch {fiber.id}",
                         fiber.stack.frames) for fiber in (self.root, *self.fibers.values())]
        return summaries.instance_summary(
            branches, redacted=self.program.redact, waiting_for=waiting_for,
            waiting_events=waiting_events, wake_at=wake_at, custom_status=self.custom_status,
            parent=self._parent, children=self._children, outcome=shown,
            error_traceback=error_traceback)

    async def _store(self, state: dict[str, Any]) -> None:
        raising, self._raising = self._raising, False
        await self.backend.save_state(self.instance_id, state)
        if not raising:  # the state a retry starts from (only a running or paused one is used)
            self.last_saved = state
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
        await self._save(envelope.COMPLETED, result=result, shown=summaries.bounded_repr(value))
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
            with contextlib.suppress(InstanceEndedError):  # the parent ended first: nobody waits
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
