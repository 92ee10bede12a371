"""Leases and timers do not depend on wall clocks agreeing.

A wall clock is stepped by patching ``time.time`` in this process, as NTP
would step it: everything that reads the wall clock (the SQLite store's
``durable_now()``, the system clock of timers) sees the jump, and nothing that
reads the monotonic clock (asyncio, lease renewal) does. Nothing asserts how
long anything took.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import pytest
from harness import running

from durable import Client, Worker, make_durable, sleep
from durable.errors import StoreError
from durable.stores.base import FINISHED, WAITING

STEPS: collections.Counter[str] = collections.Counter()  # steps completed, per instance
ENTERED: collections.Counter[str] = collections.Counter()  # steps begun, per instance
GATE: dict[str, asyncio.Event] = {}


async def held_step(name: str) -> str:
    """A durable call that waits until the test opens the gate."""
    ENTERED[name] += 1
    await GATE["open"].wait()
    STEPS[name] += 1
    return name


async def quick_step(name: str) -> str:
    ENTERED[name] += 1
    STEPS[name] += 1
    return name


@make_durable
async def held(name: str) -> str:
    return await held_step(name)


@make_durable
async def canary(name: str) -> str:
    return await quick_step(name)


@make_durable
async def napper(name: str) -> str:
    await quick_step(name)
    await sleep(600)
    return name


@pytest.fixture(autouse=True)
def _fresh_records():
    STEPS.clear()
    ENTERED.clear()
    GATE["open"] = asyncio.Event()


def step_wall_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This machine's wall clock jumps ``seconds`` ahead (the monotonic clock does not)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def database_time(dsn: str) -> float:
    """The PostgreSQL server's clock, in seconds since the epoch."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=10) as connection:
        return float(connection.execute("SELECT extract(epoch FROM now())").fetchone()[0])


async def until(condition, seconds: float = 60) -> None:
    """Wait until ``condition()`` holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not done after {seconds} s"
        await asyncio.sleep(0.01)


async def test_a_wall_clock_step_past_the_leases_runs_no_step_twice(opened, tmp_path,
                                                                   monkeypatch) -> None:
    store = opened(f"sqlite:///{tmp_path / 'durable.db'}")
    client = Client(store)
    ids = [f"held-{n}" for n in range(20)]
    for instance in ids:
        await client.start(held, instance, instance_id=instance)
    worker = Worker(store, [held, canary], concurrency=100, lease_seconds=30, poll_interval=0.05)
    async with running(worker):
        await until(lambda: sorted(ENTERED) == sorted(ids))  # 20 steps in flight
        step_wall_clock(monkeypatch, 3600)  # far past every lease the worker holds
        # An instance started after the step runs: the worker claimed since the step, and every
        # lease it holds looked expired to that claim.
        await (await client.start(canary, "canary", instance_id="canary")).result(timeout=60)
        GATE["open"].set()
        for instance in ids:
            assert await client.result(instance, timeout=60) == instance
    assert ENTERED == STEPS == collections.Counter({**dict.fromkeys(ids, 1), "canary": 1})


async def test_a_timer_does_not_fire_early_on_a_worker_whose_clock_runs_ahead(
        postgres_dsn, opened, monkeypatch, caplog) -> None:
    store = opened(postgres_dsn)
    client = Client(store)
    first = await client.start(napper, "nap-1", instance_id="nap-1")
    async with running(Worker(store, [napper], poll_interval=0.05)):  # a worker on time
        set_at = await first.wait_for_status(WAITING, timeout=60)
    assert set_at.wake_at is not None

    step_wall_clock(monkeypatch, 3600)  # this machine's clock runs an hour ahead from now on
    caplog.set_level(logging.WARNING, logger="durable.worker")
    async with running(Worker(store, [napper, canary], poll_interval=0.05)):
        # It claims (the canary runs) while the timer is due on its own clock, not the database's.
        await (await client.start(canary, "canary", instance_id="canary")).result(timeout=60)
        # A timer it sets itself is on the database's clock too.
        second = await client.start(napper, "nap-2", instance_id="nap-2")
        set_ahead = await second.wait_for_status(WAITING, timeout=60)
        database_now = database_time(postgres_dsn)
    assert (await first.status()).status == WAITING
    assert (await first.status()).wake_at == set_at.wake_at
    assert STEPS["nap-1"] == 1
    assert set_ahead.status == WAITING
    assert set_ahead.wake_at is not None
    assert database_now < set_ahead.wake_at < database_now + 660  # not an hour later
    warnings = [record.getMessage() for record in caplog.records]
    assert any("clock is" in text and "s ahead of" in text for text in warnings), warnings


async def test_a_worker_stops_an_instance_whose_lease_expired_unrenewed(opened, tmp_path,
                                                                       caplog) -> None:
    """Renewals fail (the store does not answer them): once the lease has run out on the
    worker's own monotonic clock, another worker may have the instance, so this one stops it."""
    store = opened(f"sqlite:///{tmp_path / 'durable.db'}")
    client = Client(store)
    await client.start(held, "held", instance_id="held")

    async def unanswered(leases, lease_seconds):
        raise StoreError("the store does not answer")
    store.renew = unanswered  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="durable.worker")

    def stopped() -> bool:
        return any(record.getMessage().startswith("instance held: lease")
                   and record.getMessage().endswith("was lost; stopping it")
                   for record in caplog.records)
    async with running(Worker(store, [held], lease_seconds=0.3, poll_interval=0.05)):
        await until(stopped, 30)
        assert STEPS["held"] == 0  # stopped in its step: nothing of it was saved
        GATE["open"].set()  # claimed again (its lease expired), it runs to its end
        assert await client.result("held", timeout=60) == "held"


async def test_a_lease_that_could_not_be_given_back_is_given_back_when_the_store_answers(
        opened, tmp_path) -> None:
    """A save fails (the store is briefly unreachable), and so do the first attempts to give
    the lease back; the worker tries again, so the instance runs again long before its lease
    of a minute would have expired."""
    store = opened(f"sqlite:///{tmp_path / 'durable.db'}")
    client = Client(store)
    handle = await client.start(canary, "c", instance_id="c")
    save_leased, release = store.save_leased, store.release
    failures = collections.Counter()

    async def failing_save(lease, state):
        if failures["save"] == 0:
            failures["save"] += 1
            raise StoreError("the store does not answer")
        await save_leased(lease, state)

    async def failing_release(lease):
        if failures["release"] < 3:
            failures["release"] += 1
            raise StoreError("the store does not answer")
        await release(lease)
    store.save_leased = failing_save  # type: ignore[method-assign]
    store.release = failing_release  # type: ignore[method-assign]
    async with running(Worker(store, [canary], lease_seconds=60, poll_interval=0.05)):
        assert await handle.result(timeout=20) == "c"
    assert failures == {"save": 1, "release": 3}
    assert (await handle.status()).status == FINISHED


def test_a_synced_clock_follows_its_readings_not_this_machines_wall_clock(monkeypatch) -> None:
    from durable.clock import SyncedClock

    clock = SyncedClock()
    reading = 1_000_000_000.0  # another clock's time, far from this machine's
    assert clock.sync(reading) > 0  # this machine's clock is ahead of it
    assert reading <= clock.time() < reading + 60  # carried forward, never behind the reading
    step_wall_clock(monkeypatch, 3600)
    assert reading <= clock.time() < reading + 60  # a step of the wall clock moves it not
