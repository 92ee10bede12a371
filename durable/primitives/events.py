"""Waiting for events: ``await wait_for_event(name, timeout=...)`` and the seed's pause statement."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..clock import timer_time
from ..errors import EventTimeout, PauseForEventException
from .base import Deliver, Outcome, Primitive, Run, Sentinel, Suspend, Throw, seconds_of

NO_DEFAULT = Sentinel("NO_DEFAULT", __name__)  # no default given: a timeout raises EventTimeout


class EventWait(Primitive):
    """Until event ``name`` is published; its payload is the result.

    With a timeout, the deadline is fixed when the wait starts and saved, so
    a restart does not extend it.
    """

    __slots__ = ("deadline", "default", "event", "timeout", "wants_payload")

    def __init__(self, event: str, timeout: float | None = None, default: Any = NO_DEFAULT,
                 wants_payload: bool = True) -> None:
        self.event = event
        self.timeout = timeout
        self.default = default
        self.wants_payload = wants_payload
        self.deadline: float | None = None

    async def advance(self, run: Run) -> Outcome:
        found, payload = await run.take_event(self.event, self.wants_payload)
        if found:
            return Deliver(payload)
        if self.timeout is None:
            return Suspend(self.event, None, changed=False)
        now = run.clock.time()
        started = self.deadline is None
        if started:
            self.deadline = timer_time(now + self.timeout)
        if now >= self.deadline:
            if self.default is NO_DEFAULT:
                return Throw(EventTimeout(self.event, self.timeout))
            return Deliver(self.default)
        return Suspend(self.event, self.deadline, changed=started)

    def describe(self) -> str:
        return f"wait_for_event({self.event!r})"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.event, self.timeout, self.default, self.wants_payload, self.deadline)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.event, self.timeout, self.default, self.wants_payload, self.deadline = state


def wait_for_event(name: str, timeout: float | timedelta | None = None,
                   default: Any = NO_DEFAULT) -> EventWait:
    """``payload = await wait_for_event("approved", timeout=timedelta(hours=24))``.

    Pauses the instance until ``name`` is published to it (``Client.publish_event`` or
    ``DurableBackend.publish_event``, with an optional payload: the result). Events published
    before the wait are kept, in order, and each is consumed by one wait. After ``timeout``
    it raises ``EventTimeout``, or returns ``default`` if one is given.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"an event name is a non-empty string, got {name!r}")
    seconds = None if timeout is None else seconds_of(timeout, "wait_for_event(timeout=...)")
    return EventWait(name, seconds, default)


def pause_wait(pause: PauseForEventException) -> EventWait:
    """The seed's ``raise PauseForEventException(name)`` statement: a wait with no payload."""
    return EventWait(pause.event, wants_payload=False)
