"""Clocks: what durable timers, retries and event timeouts read the time from.

Timers are stored as absolute times (seconds since the epoch), so they mean
the same to every process that loads the state, as long as those processes
agree on the time. On one machine they share its wall clock (``Clock``). A
store whose processes run on many machines (PostgreSQL) keeps the time
itself: a worker then reads a ``SyncedClock``, the database's clock carried
forward between readings by this process's monotonic clock, so its own wall
clock (ahead, behind, or stepped by NTP) moves no timer. Tests swap in a
``VirtualClock`` (``durable.testing``), whose time moves only when told to,
so a 24-hour timeout is tested in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Clock:
    """The system's wall clock. Subclasses move time themselves and call the listeners."""

    def time(self) -> float:
        return time.time()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` whenever the time jumps (never, for the system clock); returns
        a function that unsubscribes it."""
        return lambda: None

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = Clock()


class SyncedClock(Clock):
    """Another clock's time (a database server's), read now and then with ``sync`` and carried
    forward between readings by this process's monotonic clock: what it says never jumps when
    this machine's wall clock is stepped, and agrees with that other clock, whatever this
    machine's wall clock says. Until the first reading it is this machine's wall clock."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def time(self) -> float:
        return time.monotonic() + self._offset

    def sync(self, reading: float) -> float:
        """Take ``reading``, the other clock's time, just received; return how far this
        machine's wall clock is ahead of it (negative: behind).

        The reading was taken before it arrived, so the time carried forward from it is late
        by the trip back, never early: a timer read on this clock never fires early."""
        self._offset = reading - time.monotonic()
        return time.time() - reading

    def __repr__(self) -> str:
        return f"SyncedClock({as_datetime(self.time()).isoformat()})"


class VirtualClock(Clock):
    """A clock that stands still until ``advance`` or ``set`` moves it (only ever forward)."""

    def __init__(self, start: float | datetime | None = None) -> None:
        self._now = time.time() if start is None else _seconds(start)
        self._listeners: list[Callable[[], None]] = []

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a virtual clock only moves forward, got {seconds} s")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def set(self, when: float | datetime) -> None:
        """Move the clock to ``when`` (a datetime or seconds since the epoch)."""
        self.advance(_seconds(when) - self._now)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __repr__(self) -> str:
        return f"VirtualClock({as_datetime(self._now).isoformat()})"


def _seconds(when: float | datetime) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"{when!r} has no time zone: give an aware datetime "
                             "(datetime.now(timezone.utc), or with tzinfo=...)")
        return when.timestamp()
    return float(when)


def timer_time(seconds: float) -> float:
    """The first whole microsecond at or after ``seconds``: a timer set then survives the trip
    through a datetime (``PauseForEventException.until``, ``VirtualClock.set``) unchanged, so
    waking at ``until`` is never a hair too early."""
    when = datetime.fromtimestamp(seconds, UTC)
    if when.timestamp() < seconds:
        when += timedelta(microseconds=1)
    return when.timestamp()


def as_datetime(seconds: float) -> datetime:
    """A stored time as an aware UTC datetime, for messages and status."""
    return datetime.fromtimestamp(seconds, UTC)
