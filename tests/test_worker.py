"""Worker: runs started instances under leases, resumes them on events, stops cleanly.

Programs record what they run in module globals, so the tests count executions
(nothing runs twice that was saved, nothing runs in two places at once). Every
wait has a generous timeout; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import collections
import threading

import pytest
from harness import running

from durable import (
    Client,
    InstanceTerminated,
    PauseForEventException,
    SerializationError,
    TooLargeError,
    Worker,
    make_durable,
)
from durable.runtime.runtime import DurableRuntime
from durable.stores import open_store
from durable.stores.base import FAILED, FINISHED, RUNNING, TERMINATED, WAITING
from durable.worker import LeasedBackend

STEPS: collections.Counter[tuple[str, int]] = collections.Counter()
ACTIVE: collections.Counter[str] = collections.Counter()
MOST_ACTIVE: collections.Counter[str] = collections.Counter()
STARTS: collections.Counter[str] = collections.Counter()
GATES: dict[str, asyncio.Event] = {}
ENTERED: dict[str, asyncio.Event] = {}


async def step(name: str, number: int) -> int:
    """One durable call: counts how often it runs and how many runs of ``name`` overlap."""
    ACTIVE[name] += 1
    MOST_ACTIVE[name] = max(MOST_ACTIVE[name], ACTIVE[name])
    await asyncio.sleep(0.001)
    ACTIVE[name] -= 1
    STEPS[name, number] += 1
    return number


async def gated_step(name: str, number: int) -> int:
    """A durable call that waits until the test opens the instance's gate."""
    ENTERED[name].set()
    await GATES[name].wait()
    return await step(name, number)


async def _steps(name: str, count: int) -> int:
    STARTS[name] += 1
    total = 0
    for number in range(count):
        total += await step(name, number)
    return total


steps = make_durable(_steps)


@make_durable
async def approval(name: str) -> str:
    STARTS[name] += 1
    await step(name, 0)
    raise PauseForEventException("approve")
    await step(name, 1)
    return f"{name} approved"


@make_durable
async def gated(name: str) -> str:
    STARTS[name] += 1
    await gated_step(name, 0)
    await step(name, 1)
    return f"{name} done"


@make_durable
async def fails(name: str) -> None:
    await step(name, 0)
    raise ValueError(f"boom in {name}")


@make_durable
async def unsaveable(name: str) -> bool:
    STARTS[name] += 1
    lock = threading.Lock()
    await step(name, 0)
    return lock.locked()


@make_durable
async def grows(name: str, size: int) -> int:
    STARTS[name] += 1
    data = "x" * size
    await step(name, 0)
    raise PauseForEventException("more")  # saved here, with data
    return len(data)


@pytest.fixture(autouse=True)
def _fresh_records():
    for record in (STEPS, ACTIVE, MOST_ACTIVE, STARTS, GATES, ENTERED):
        record.clear()


@pytest.fixture
def client(store):
    return Client(store)


def gate(name: str) -> asyncio.Event:
    GATES[name] = asyncio.Event()
    ENTERED[name] = asyncio.Event()
    return GATES[name]



async def test_a_worker_runs_a_started_instance_to_the_end(client, store) -> None:
    handle = await client.start(steps, "s-1", 4, instance_id="s-1")
    async with running(Worker(store, [steps])):
        assert await handle.result(timeout=60) == 0 + 1 + 2 + 3
    assert (await handle.status()).status == FINISHED
    assert STARTS["s-1"] == 1
    assert all(STEPS["s-1", n] == 1 for n in range(4))


async def test_a_paused_instance_resumes_when_its_event_is_published(client, store) -> None:
    handle = await client.start(approval, "a-1", instance_id="a-1")
    async with running(Worker(store, [approval])):
        info = await client.wait_for_status("a-1", WAITING, timeout=60)
        assert info.waiting_for == "approve" and info.lease_owner is None
        assert STEPS["a-1", 1] == 0
        await client.publish_event("a-1", "approve")
        assert await handle.result(timeout=60) == "a-1 approved"
    assert (STARTS["a-1"], STEPS["a-1", 0], STEPS["a-1", 1]) == (1, 1, 1)


async def test_an_event_published_before_the_wait_is_not_lost(client, store) -> None:
    handle = await client.start(approval, "a-2", instance_id="a-2")
    await client.publish_event("a-2", "approve", payload={"ok": True})
    async with running(Worker(store, [approval])):
        assert await handle.result(timeout=60) == "a-2 approved"
    assert (STARTS["a-2"], STEPS["a-2", 0], STEPS["a-2", 1]) == (1, 1, 1)


async def test_a_failing_program_fails_with_its_error(client, store) -> None:
    handle = await client.start(fails, "f-1", instance_id="f-1")
    async with running(Worker(store, [fails])):
        with pytest.raises(ValueError, match="boom in f-1"):
            await handle.result(timeout=60)
    assert (await handle.status()).status == FAILED
    with pytest.raises(ValueError, match="boom in f-1"):
        await handle.result(wait=False)
    assert STEPS["f-1", 0] == 1


async def test_an_unsaveable_local_fails_the_instance_instead_of_retrying_it(client, store) -> None:
    handle = await client.start(unsaveable, "u-1", instance_id="u-1")
    async with running(Worker(store, [unsaveable])):
        with pytest.raises(SerializationError, match="lock"):
            await handle.result(timeout=60)
        # Failed for good: nothing left to claim, so it is not run again.
        assert await store.claim("probe", [unsaveable.key], 10, 30.0) == []
    assert (await handle.status()).status == FAILED
    assert STARTS["u-1"] == 1


async def test_a_state_over_the_store_limit_fails_the_instance_and_the_worker_goes_on(
        store_url, client, opened) -> None:
    """Limits set in the worker's store URL: the instance whose state outgrew them fails with
    the error naming it and its size (its last state kept); the next instance runs."""
    small = opened(f"{store_url}?max_state_bytes=20000")
    big = await client.start(grows, "big", 50_000, instance_id="big")
    await client.start(grows, "fine", 10, instance_id="fine")
    async with running(Worker(small, [grows])):
        with pytest.raises(TooLargeError, match=r"the state of instance 'big' is 50,\d{3} bytes, "
                                                r"over the store's limit of 20,000 bytes"):
            await big.result(timeout=60)
        await client.wait_for_status("fine", WAITING, timeout=60)
    assert (await big.status()).status == FAILED
    assert STARTS["big"] == 1 and STEPS["big", 0] == 1  # failed for good, not run again
    assert (await small.load("big"))["retry"]["frames"]  # the last state it saved, for a retry


async def test_state_that_cannot_be_loaded_blocks_the_instance_untouched(client, store) -> None:
    await client.start(steps, "bad", 2, instance_id="bad")
    state = await store.load("bad")
    await store.save("bad", {**state, "frames": [b"not a pickle"]})
    async with running(Worker(store, [steps], name="w")):
        info = await client.wait_for_status("bad", "blocked", timeout=60)
    assert info.status == "blocked" and info.blocked_by == "w"
    assert "cannot load the saved state" in info.reason
    assert (await store.load("bad"))["frames"] == [b"not a pickle"]
    assert STARTS["bad"] == 0


async def test_terminating_a_running_instance_refuses_its_next_save(client, store) -> None:
    opened = gate("t-1")
    handle = await client.start(gated, "t-1", instance_id="t-1")
    async with running(Worker(store, [gated])) as task:
        await asyncio.wait_for(ENTERED["t-1"].wait(), 60)
        assert (await handle.status()).lease_owner is not None
        assert await handle.terminate("cancelled by the test") is True
        opened.set()  # the step ends; saving after it is refused, so the next step never runs
        with pytest.raises(InstanceTerminated, match="cancelled by the test"):
            await handle.result(timeout=60)
        assert not task.done()  # the lost lease was dropped quietly
    info = await handle.status()
    assert (info.status, info.reason) == (TERMINATED, "cancelled by the test")
    assert STEPS["t-1", 0] == 1 and STEPS["t-1", 1] == 0


async def test_a_stopping_worker_saves_at_the_next_save_and_gives_the_instance_back(
        client, store) -> None:
    opened = gate("g-1")
    handle = await client.start(gated, "g-1", instance_id="g-1")
    first = Worker(store, [gated])
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(ENTERED["g-1"].wait(), 60)
    first.stop()
    await asyncio.sleep(0.05)
    assert not task.done()  # it waits for the running instance
    opened.set()
    await asyncio.wait_for(task, 60)
    info = await handle.status()
    assert (info.status, info.lease_owner) == (RUNNING, None)
    assert (STEPS["g-1", 0], STEPS["g-1", 1]) == (1, 0)  # saved after step 0, stopped there
    async with running(Worker(store, [gated])):
        assert await handle.result(timeout=60) == "g-1 done"
    assert (STARTS["g-1"], STEPS["g-1", 0], STEPS["g-1", 1]) == (1, 1, 1)


async def test_stop_now_gives_instances_back_without_saving(client, store) -> None:
    opened = gate("n-1")
    handle = await client.start(gated, "n-1", instance_id="n-1")
    first = Worker(store, [gated])
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(ENTERED["n-1"].wait(), 60)
    threading.Thread(target=first.stop, kwargs={"now": True}).start()  # from another thread
    await asyncio.wait_for(task, 60)
    info = await handle.status()
    assert (info.status, info.lease_owner) == (RUNNING, None)
    opened.set()
    async with running(Worker(store, [gated])):
        assert await handle.result(timeout=60) == "n-1 done"
    # Nothing was saved after the start, so the whole instance ran again: at least once.
    assert (STARTS["n-1"], STEPS["n-1", 0], STEPS["n-1", 1]) == (2, 1, 1)


async def test_a_worker_stopped_before_it_runs_returns(store) -> None:
    worker = Worker(store, [steps])
    worker.stop()
    await asyncio.wait_for(worker.run(), 60)


async def test_two_workers_never_run_one_instance_at_once(store_url, client, store) -> None:
    names = [f"p-{n}" for n in range(24)]
    for name in names:
        await client.start(steps, name, 5, instance_id=name)
    other_store = open_store(store_url)  # as another process would
    try:
        async with running(Worker(store, [steps], concurrency=3, name="one")), \
                running(Worker(other_store, [steps], concurrency=3, name="two")):
            for name in names:
                assert await client.result(name, timeout=120) == 10
    finally:
        await other_store.close()
    for name in names:
        assert STARTS[name] == 1, name
        assert MOST_ACTIVE[name] == 1, name
        assert [STEPS[name, n] for n in range(5)] == [1] * 5, name


async def test_leases_are_renewed_while_an_instance_runs(client, store, store_url) -> None:
    opened = gate("r-1")
    handle = await client.start(gated, "r-1", instance_id="r-1")
    other_store = open_store(store_url)
    try:
        async with running(Worker(store, [gated], lease_seconds=1.0, name="holder")):
            await asyncio.wait_for(ENTERED["r-1"].wait(), 60)
            assert (await handle.status()).lease_owner == "holder"
            async with running(Worker(other_store, [gated], lease_seconds=1.0, poll_interval=0.1,
                                      name="taker")):
                await asyncio.sleep(3.5)  # several lease lengths: renewal keeps it with the holder
                assert (await handle.status()).lease_owner == "holder"
            opened.set()
            assert await handle.result(timeout=60) == "r-1 done"
    finally:
        await other_store.close()
    assert (STARTS["r-1"], STEPS["r-1", 0], STEPS["r-1", 1]) == (1, 1, 1)


async def test_a_leased_backend_saves_under_its_lease(client, store) -> None:
    await client.start(steps, "l-1", 1, instance_id="l-1")
    [lease] = await store.claim("me", [steps.key], 10, 30.0)
    backend = LeasedBackend(store, lease)
    assert await DurableRuntime(steps, backend, "l-1").run() == 0
    assert backend.ended
    assert (await client.status("l-1")).status == FINISHED


def test_workers_check_their_programs(store) -> None:
    with pytest.raises(ValueError, match="at least one"):
        Worker(store, [])
    with pytest.raises(TypeError, match="durable programs"):
        Worker(store, [_steps])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="concurrency"):
        Worker(store, [steps], concurrency=0)
