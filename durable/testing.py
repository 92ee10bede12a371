"""Helpers for testing durable programs: a clock that moves only when told to.

    clock = VirtualClock()
    backend = DurableBackend(InMemoryStateStore(), clock=clock)   # or Worker(..., clock=clock)
    ...                                  # the program sleeps for a day
    clock.advance(timedelta(days=1).total_seconds())
"""

from .clock import VirtualClock

__all__ = ["VirtualClock"]
