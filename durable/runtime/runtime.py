"""DurableRuntime: runs an instance's call stack, saving it at every suspension that needs it.

The runtime is three jobs, one module each: the trampoline runs frames
(``trampoline``), the scheduler runs fibers (``scheduler``), saving writes the
state (``saving``); this module loads an instance and starts it.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from .. import history, serialization
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import Cancelled, IncompatibleStateError
from ..ids import check_instance_id
from . import envelope
from . import summary as summaries
from .fibers import Checkpoints, Fiber
from .migration import Restoring
from .outcomes import ENDED, outcome
from .saving import Saving
from .scheduler import Scheduler
from .stack import CallStack
from .trampoline import Trampoline

if TYPE_CHECKING:
    from ..backends import OrchestrationBackend
    from ..program import DurableProgram


__all__ = ["ENDED", "DurableRuntime", "outcome"]


class DurableRuntime(Trampoline, Scheduler, Saving):
    """Drives one instance of a durable program against an orchestration backend."""

    def __init__(self, program: DurableProgram, backend: OrchestrationBackend,
                 instance_id: str | None = None, *, save_every_await: bool = False) -> None:
        self.program = program
        self.backend = backend
        self.instance_id = str(uuid.uuid4()) if instance_id is None else check_instance_id(
            instance_id)
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
        self._history: list[history.Entry] = []  # recorded since the last save (history.py)
        self._recorded = 0  # entries recorded since the instance started
        self._consumed: list[str] = []  # events taken since the last snapshot
        self._saving: list[str] = []  # events in a snapshot being written
        self.last_saved: dict[str, Any] | None = None  # kept beside the error if it fails
        self._raising = False  # the save being made carries an error out of a frame

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        """Start the instance, or continue it from its saved state (``args`` are then ignored)."""
        state = await self.backend.load_state(self.instance_id)
        if state is None:
            await self._store(self.initial_state(*args, **kwargs))
            return await self._schedule([self.root])
        envelope.check(state, self.program.key, self.instance_id)
        self._saves = state.get("saves", 0)
        self._recorded = state.get("recorded", 0)
        self.custom_status = state.get("custom_status")
        self._parent = state.get("parent")
        self._children = state.get("children", 0)
        status = state["status"]
        if status in ENDED:
            return outcome(state, self.instance_id)
        self.last_saved = state
        self._load_fibers(state)
        if status == envelope.PAUSED:
            self.record(history.RESUMED)
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
        arguments = self.root.stack.frames[0].saved_variables()[0]
        self.record(history.CREATED, arguments=summaries.variables(arguments, self.program.redact))
        return self._state(envelope.RUNNING)

    def start_digest(self) -> str | None:
        """What a second start of this id is compared by (``stores.base.start_digest``): the
        program and the arguments its first frame was given, alike in every process (sets in a
        fixed order); None if they cannot be digested so (the store hashes the frame then).
        Made only by ``Client.start``: it costs a pure-Python pickling of the arguments."""
        first = self.root.stack.frames[0]
        return serialization.canonical_digest((self.program.key, first.saved_variables()[0]))

    def record(self, kind: str, **data: Any) -> None:
        """Add an entry to the instance's history (``history``): saved with its next save."""
        self._history.append(history.entry(kind, **data))

    def _load_fibers(self, state: dict[str, Any]) -> None:
        restoring = Restoring(self.instance_id, self.program.migrate, state.get("positions"))
        try:
            self._restore_fibers(state, restoring)
        finally:
            for function, old_line, new_line in restoring.moved:
                self.record(history.MIGRATED, function=function, old_line=old_line,
                            new_line=new_line)

    def _restore_fibers(self, state: dict[str, Any], restoring: Restoring) -> None:
        try:
            if state.get("fibers") is None:
                self.root.stack = CallStack.from_blobs(state["frames"], restoring)
                return
            next_fiber, saved = serialization.loads(state["fibers"])
            fibers = [Fiber.restore(self, fiber, restoring) for fiber in saved]
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
