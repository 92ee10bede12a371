"""Waiting for an ``asyncio.Event`` with a timeout, without losing a cancellation.

On Python 3.11 ``asyncio.wait_for`` returns normally when the awaited future
completes in the same loop turn as the waiting task is cancelled (CPython
gh-86296): a loop around it then never sees the cancellation, and a worker
asked to stop waits forever. ``asyncio.timeout`` counts cancellations and
lets an outside one through.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed; True if it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
