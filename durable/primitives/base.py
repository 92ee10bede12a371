"""Primitives: awaitables that the runtime carries out itself, with their progress saved.

``await wait_for_event(...)``, ``await sleep(...)`` and ``await step(...)``
in durable code return a ``Primitive`` instead of a coroutine. The runtime
keeps it on the awaiting frame (``FunctionCall.awaiting``) until it delivers
an outcome, and saves it with the frame: its attributes are its progress (a
deadline, an attempt count), so they must be picklable. ``advance`` is called
when the primitive is first awaited and again every time the instance runs
after that, until it returns ``Deliver`` or ``Throw``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from ..clock import Clock


class Run(Protocol):
    """What a primitive may ask of the runtime driving it."""

    clock: Clock
    instance_id: str
    program: str  # the program's key (module:qualname), as logs name it

    async def take_event(self, name: str, payload: bool) -> tuple[bool, Any]:
        """Consume a published ``name`` event (recorded by the next save): (found, payload)."""

    async def checkpoint(self) -> None:
        """Save the instance now, with this primitive's progress as it is."""

    async def call_sync(self, fn: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
        """``fn(*args, **kwargs)`` in a thread, off the event loop (a plain function may block)."""

    def start_branch(self, call: Awaitable[Any], where: str) -> int:
        """Run ``call`` (a durable call or a primitive) as a new branch; its id."""

    def branch_outcome(self, branch: int) -> tuple[bool, Any, int] | None:
        """(succeeded, result or error, completion order), or None while it runs."""

    def release_branches(self, branches: Iterable[int]) -> None:
        """Nobody waits for these any more: forget them once they end."""

    def set_custom_status(self, value: Any) -> None:
        """What ``Client.status`` shows as ``custom_status``."""

    def record(self, kind: str, **data: Any) -> None:
        """Add an entry to the instance's history (``durable.history``)."""

    async def start_child(self, program: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                          instance_id: str | None) -> str:
        """Create a child instance of ``program`` (unless it exists); its id."""

    async def child_outcome(self, instance_id: str) -> Deliver | Throw | None:
        """A child's result or error once it has ended; None before."""

    def cancel_branches(self, branches: Iterable[int]) -> None:
        """Raise ``asyncio.CancelledError`` in those still running (wait for their ends, then
        release them)."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """The await evaluates to ``value``."""

    value: Any = None


@dataclass(frozen=True, slots=True)
class Throw:
    """The await raises ``error``."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Suspend:
    """Pause the instance until ``event`` is published or the clock reaches ``wake_at``.

    ``changed``: the primitive's progress changed since it was saved (if not,
    nothing needs saving before the instance pauses again).
    """

    event: str | None
    wake_at: float | None
    changed: bool = True


@dataclass(frozen=True, slots=True)
class WaitBranches:
    """Wait until one of the branches this primitive started ends, then advance it again."""


Outcome = Deliver | Throw | Suspend | WaitBranches


class Primitive:
    """Base of the awaitables the runtime carries out (see the module docstring)."""

    __slots__ = ()

    #: Save the instance as soon as the outcome is delivered (a step's result must be kept
    #: before the program goes on; a timer's or an event's need not).
    checkpoint_result = False

    def begin(self) -> Primitive:
        """The primitive a frame keeps while it awaits this one (a fresh copy, if this object
        is shared, like a decorated step function)."""
        return self

    async def advance(self, run: Run) -> Outcome:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def __await__(self) -> Any:
        from ..errors import NotInDurableCode

        raise NotInDurableCode(self.describe())


class Sentinel:
    """A named singleton (``NO_DEFAULT``, ``SKIPPED``), pickled as a reference to the module
    attribute of that name, so a loaded state holds the very same object."""

    def __init__(self, name: str, module: str) -> None:
        self._name = name
        self.__module__ = module

    def __reduce__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return self._name


def seconds_of(duration: float | timedelta, what: str) -> float:
    """A duration given as seconds or a timedelta, checked."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, "
                        f"got {type(duration).__name__}")
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"{what} must be zero or more seconds, got {duration!r}")
    return float(seconds)
