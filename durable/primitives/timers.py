"""Durable timers: ``await sleep(seconds)`` and ``await sleep_until(when)``.

The wake-up time is fixed when the sleep starts and saved; the process may
exit meanwhile, and a worker resumes the instance once the time has come.
The runtime checks the clock again before delivering, so a timer never fires
early, even when woken by a worker whose clock runs ahead.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .. import history
from ..clock import _seconds, timer_time
from .base import Deliver, Outcome, Primitive, Run, Suspend, seconds_of


class Sleep(Primitive):
    __slots__ = ("seconds", "wake_at")

    def __init__(self, seconds: float | None, wake_at: float | None) -> None:
        self.seconds = seconds
        self.wake_at = wake_at

    async def advance(self, run: Run) -> Outcome:
        now = run.clock.time()
        started = self.wake_at is None
        if started:
            self.wake_at = timer_time(now + (self.seconds or 0.0))
            run.record(history.TIMER_SET, until=self.wake_at)
        if now >= self.wake_at:
            run.record(history.TIMER_FIRED, due=self.wake_at)
            return Deliver(None)
        return Suspend(None, self.wake_at, changed=started)

    def describe(self) -> str:
        return "sleep()" if self.seconds is not None else "sleep_until()"

    def __getstate__(self) -> tuple[float | None, float | None]:
        return (self.seconds, self.wake_at)

    def __setstate__(self, state: tuple[float | None, float | None]) -> None:
        self.seconds, self.wake_at = state


def sleep(duration: float | timedelta) -> Sleep:
    """Pause the instance for ``duration`` (seconds or a timedelta), durably."""
    return Sleep(seconds_of(duration, "sleep()"), None)


def sleep_until(when: datetime) -> Sleep:
    """Pause the instance until ``when`` (an aware datetime), durably; at once if it has passed."""
    if not isinstance(when, datetime):
        raise TypeError(f"sleep_until() needs a datetime, got {type(when).__name__}")
    return Sleep(None, _seconds(when))
