"""Instances talking to the world: a custom status, and child instances.

``await set_status(value)`` publishes ``value`` (anything picklable) as the
instance's custom status, visible to ``Client.status``. ``start_child``
creates another instance, with its own state, that can be inspected and
signalled on its own; awaiting the handle it returns waits for its outcome.
A child tells its parent it has ended with an event; the parent also looks
at the child's state now and then, so a crash between the child's last save
and that event cannot leave the parent waiting for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Deliver, Outcome, Primitive, Run, Suspend

if TYPE_CHECKING:
    from ..program import DurableProgram

CHILD_RECHECK_SECONDS = 30.0


def child_event(child_id: str) -> str:
    """The event a child publishes to its parent when it ends."""
    return f"durable:child-ended:{child_id}"


class SetStatus(Primitive):
    __slots__ = ("value",)
    checkpoint_result = True  # saved at once, so a client sees it

    def __init__(self, value: Any) -> None:
        self.value = value

    async def advance(self, run: Run) -> Outcome:
        run.set_custom_status(self.value)
        return Deliver(None)

    def describe(self) -> str:
        return "set_status()"

    def __getstate__(self) -> Any:
        return self.value

    def __setstate__(self, value: Any) -> None:
        self.value = value


def set_status(value: Any) -> SetStatus:
    """``await set_status({"stage": "shipping"})``: what ``Client.status(id).custom_status``
    shows until the next call. Saved with the instance."""
    return SetStatus(value)


class _OfChild(Primitive):
    """A primitive about one child instance: its id is all its state."""

    __slots__ = ("instance_id",)

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    def describe(self) -> str:
        return f"the child instance {self.instance_id!r}"

    def __getstate__(self) -> str:
        return self.instance_id

    def __setstate__(self, instance_id: str) -> None:
        self.instance_id = instance_id


class ChildHandle(_OfChild):
    """A child instance. ``await handle`` (in durable code) waits for its result or error."""

    __slots__ = ()

    def begin(self) -> ChildWait:
        return ChildWait(self.instance_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChildHandle) and other.instance_id == self.instance_id

    def __hash__(self) -> int:
        return hash(self.instance_id)

    def __repr__(self) -> str:
        return f"<ChildHandle {self.instance_id!r}>"


class ChildWait(_OfChild):
    __slots__ = ()

    async def advance(self, run: Run) -> Outcome:
        ended = await run.child_outcome(self.instance_id)
        if ended is not None:
            await run.take_event(child_event(self.instance_id), False)
            return ended
        return Suspend(child_event(self.instance_id), run.clock.time() + CHILD_RECHECK_SECONDS)


class StartChild(Primitive):
    __slots__ = ("args", "instance_id", "kwargs", "program", "wait")

    def __init__(self, program: DurableProgram, args: tuple[Any, ...], kwargs: dict[str, Any],
                 instance_id: str | None, wait: bool) -> None:
        self.program = program
        self.args = args
        self.kwargs = kwargs
        self.instance_id = instance_id
        self.wait = wait

    async def advance(self, run: Run) -> Outcome:
        child = await run.start_child(self.program, self.args, self.kwargs, self.instance_id)
        if not self.wait:
            return Deliver(ChildHandle(child))
        return await ChildWait(child).advance(run)

    def begin(self) -> Primitive:
        return self if not self.wait else _Started(self)

    def describe(self) -> str:
        return f"start_child({self.program.qualname})"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.program, self.args, self.kwargs, self.instance_id, self.wait)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.program, self.args, self.kwargs, self.instance_id, self.wait = state


class _Started(Primitive):
    """``call_child``: the child is created once, then waited for."""

    __slots__ = ("child", "start")

    def __init__(self, start: StartChild) -> None:
        self.start: StartChild | None = start
        self.child: str | None = None

    async def advance(self, run: Run) -> Outcome:
        if self.start is not None:
            start, self.start = self.start, None
            self.child = await run.start_child(start.program, start.args, start.kwargs,
                                               start.instance_id)
        assert self.child is not None
        return await ChildWait(self.child).advance(run)

    def describe(self) -> str:
        return f"call_child({self.child or ''})"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.start, self.child)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.start, self.child = state


def start_child(program: DurableProgram, *args: Any, instance_id: str | None = None,
                **kwargs: Any) -> StartChild:
    """``handle = await start_child(program, *args)``: a new instance of ``program`` with its own
    state, run by whichever worker serves it. ``await handle`` waits for its outcome.

    Without ``instance_id`` the child gets ``<parent id>/<n>``: the same on every run of the
    parent, so a parent that crashed and runs again finds the child it made before.
    """
    from ..program import DurableProgram

    if not isinstance(program, DurableProgram):
        raise TypeError(f"start_child() needs a durable program (make_durable(fn)), "
                        f"got {type(program).__name__}")
    return StartChild(program, args, kwargs, instance_id, wait=False)


def call_child(program: DurableProgram, *args: Any, instance_id: str | None = None,
               **kwargs: Any) -> StartChild:
    """``result = await call_child(program, *args)``: ``start_child``, then wait for it."""
    start = start_child(program, *args, instance_id=instance_id, **kwargs)
    start.wait = True
    return start
