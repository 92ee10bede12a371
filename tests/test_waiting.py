"""wait_set: a cancellation that arrives with the event is never lost (CPython gh-86296)."""

from __future__ import annotations

import asyncio

import pytest

from durable.waiting import wait_set


async def _wait_forever(event: asyncio.Event) -> None:
    while True:  # the shape of every store's wait_for_change loop
        await wait_set(event, 0.5)
        event.clear()


async def test_a_cancellation_in_the_same_turn_as_the_event_stops_the_waiter() -> None:
    for _ in range(50):
        event = asyncio.Event()
        waiter = asyncio.create_task(_wait_forever(event))
        await asyncio.sleep(0)  # the waiter now waits on the event
        event.set()
        waiter.cancel()
        done, _ = await asyncio.wait([waiter], timeout=5)
        assert done, "the cancellation was lost: the waiter went on waiting"
        assert waiter.cancelled()


async def test_returns_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5) is True


async def test_an_outside_cancellation_is_raised() -> None:
    waiter = asyncio.create_task(wait_set(asyncio.Event(), 5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
