"""Control of running instances: custom status, cancellation, suspend and resume, children.

Each test runs a real ``Worker`` on a SQLite store (PostgreSQL too where the
store does the work) and talks to it through a ``Client``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from harness import created

from durable import (
    Cancelled,
    ChildHandle,
    Client,
    DurableBackend,
    InMemoryStateStore,
    PauseForEventException,
    Worker,
    call_child,
    gather,
    make_durable,
    set_status,
    start_child,
    wait_for_event,
)

LOG: list[Any] = []


@pytest.fixture(autouse=True)
def _fresh_log():
    LOG.clear()


@contextlib.asynccontextmanager
async def running_worker(store, *programs):
    worker = Worker(store, programs, poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        yield Client(store)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def until(condition, seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.01)


# --- set_status ---------------------------------------------------------------------------------
@make_durable
async def staged(order: str) -> str:
    await set_status({"stage": "reserved", "order": order})
    await wait_for_event("paid")
    await set_status({"stage": "shipped"})
    return order


async def test_a_custom_status_is_visible_to_clients(store) -> None:
    async with running_worker(store, staged) as client:
        handle = await client.start(staged, "o-1", instance_id="o-1")
        await handle.wait_for_status("waiting", timeout=30)
        assert await handle.custom_status() == {"stage": "reserved", "order": "o-1"}
        await handle.publish_event("paid")
        assert await handle.result(timeout=30) == "o-1"
        assert await client.custom_status("o-1") == {"stage": "shipped"}


# --- cancel -------------------------------------------------------------------------------------
@make_durable
async def saga(order: str) -> str:
    LOG.append(("reserved", order))
    try:
        await wait_for_event("paid")
        return "paid"
    except Cancelled as error:
        LOG.append(("released", order, error.reason))  # the compensation
        return f"cancelled: {error.reason}"
    finally:
        LOG.append(("finally", order))


@make_durable
async def stubborn() -> None:
    await wait_for_event("never")


async def branch_waits(name: str) -> str:
    try:
        return await wait_for_event(name)
    finally:
        LOG.append(("unwound", name))


@make_durable
async def fanned() -> list[str]:
    return await gather(branch_waits("a"), branch_waits("b"))


async def test_cancel_raises_cancelled_where_the_instance_waits(store) -> None:
    async with running_worker(store, saga, stubborn, fanned) as client:
        handle = await client.start(saga, "o-2", instance_id="o-2")
        await handle.wait_for_status("waiting", timeout=30)
        await handle.cancel("customer asked")
        assert await handle.result(timeout=30) == "cancelled: customer asked"
        assert LOG == [("reserved", "o-2"), ("released", "o-2", "customer asked"),
                       ("finally", "o-2")]

        plain = await client.start(stubborn, instance_id="plain")
        await plain.wait_for_status("waiting", timeout=30)
        await plain.cancel()
        with pytest.raises(Cancelled, match="'plain' was cancelled: no reason given"):
            await plain.result(timeout=30)
        assert (await plain.status()).status == "failed"
        assert await plain.cancel() is False  # ended: nothing is sent
        assert await store.events("plain") == []

        branches = await client.start(fanned, instance_id="fanned")
        await branches.wait_for_status("waiting", timeout=30)
        await branches.cancel("stop")
        with pytest.raises(Cancelled):
            await branches.result(timeout=30)
        assert sorted(e for e in LOG if e[0] == "unwound") == [("unwound", "a"), ("unwound", "b")]


async def test_a_cancel_published_before_the_wait_is_seen_at_the_first_pause() -> None:
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    from durable.errors import CANCEL_EVENT

    await created(saga, backend, "s", "o-3")  # started, not yet run
    backend.publish_event("s", CANCEL_EVENT, "early")
    assert await saga("o-3", orchestration_backend=backend, instance_id="s") == "cancelled: early"


# --- suspend and resume -------------------------------------------------------------------------
async def test_a_suspended_instance_is_not_run_until_resumed(store) -> None:
    async with running_worker(store, saga) as client:
        handle = await client.start(saga, "o-4", instance_id="o-4")
        await handle.wait_for_status("waiting", timeout=30)
        assert await handle.suspend() is True
        assert await handle.suspend() is False
        assert (await handle.status()).status == "suspended"
        assert [i.instance_id for i in await client.list("suspended")] == ["o-4"]
        await handle.publish_event("paid")  # kept while suspended
        await asyncio.sleep(0.3)  # several polls of the worker: it must leave the instance alone
        assert (await handle.status()).status == "suspended"
        assert await handle.resume() is True
        assert await handle.result(timeout=30) == "paid"
        assert await handle.resume() is False
        assert await handle.suspend() is False  # ended


# --- children -----------------------------------------------------------------------------------
@make_durable
async def child_task(name: str) -> str:
    payload = await wait_for_event("go")
    if payload == "fail":
        raise ValueError(f"{name} failed")
    return f"{name}: {payload}"


@make_durable
async def parent(names: list[str]) -> list[Any]:
    handles = [await start_child(child_task, name) for name in names]
    LOG.append(("children", [h.instance_id for h in handles]))
    results = []
    for handle in handles:
        try:
            results.append(await handle)
        except ValueError as error:
            results.append(f"error: {error}")
    results.append(await call_child(child_task, "direct", instance_id="direct-child"))
    return results


async def test_children_have_their_own_state_and_their_parent_waits_for_them(store) -> None:
    async with running_worker(store, parent, child_task) as client:
        handle = await client.start(parent, ["x", "y"], instance_id="p")
        await until(lambda: _all_waiting(client, ["p/1", "p/2"]))
        assert LOG == [("children", ["p/1", "p/2"])]
        child = await client.status("p/1")
        assert child.program == child_task.key and child.waiting_for == "go"
        await client.publish_event("p/2", "go", "fail")
        await client.publish_event("p/1", "go", "hello")
        await until(lambda: _all_waiting(client, ["direct-child"]))
        await client.publish_event("direct-child", "go", "there")
        assert await handle.result(timeout=30) == ["x: hello", "error: y failed", "direct: there"]
        assert (await client.status("p/2")).status == "failed"
        assert LOG == [("children", ["p/1", "p/2"])]  # the parent ran each step once


async def _all_waiting(client: Client, ids: list[str]) -> bool:
    try:
        return all([(await client.status(i)).status == "waiting" for i in ids])
    except LookupError:
        return False


async def test_a_child_handle_is_plain_data_and_start_child_checks_its_program() -> None:
    handle = ChildHandle("c-1")
    assert handle == ChildHandle("c-1") and repr(handle) == "<ChildHandle 'c-1'>"
    with pytest.raises(TypeError, match="durable program"):
        start_child(len)


async def test_seed_style_a_parent_pauses_until_its_child_has_ended() -> None:
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    with pytest.raises(PauseForEventException):
        await parent(["solo"], orchestration_backend=backend, instance_id="q")
    with pytest.raises(PauseForEventException):  # run the child ourselves, seed style
        await child_task(orchestration_backend=backend, instance_id="q/1")
    backend.publish_event("q/1", "go", "hi")
    assert await child_task(orchestration_backend=backend, instance_id="q/1") == "solo: hi"
    with pytest.raises(PauseForEventException):  # now on to its call_child
        await parent(["solo"], orchestration_backend=backend, instance_id="q")
    backend.publish_event("direct-child", "go", "x")
    assert await child_task(orchestration_backend=backend, instance_id="direct-child") == "direct: x"
    assert await parent(["solo"], orchestration_backend=backend, instance_id="q") == [
        "solo: hi", "direct: x"]


@make_durable
async def busy(n: int) -> str:
    done = 0
    try:
        for i in range(n):
            done += await tick(i)  # durable calls, never a pause
        return "all done"
    except Cancelled as error:
        LOG.append(("compensate", done))
        await tick(-1)  # a compensation's own awaits are not cancelled again
        return f"stopped after {done}: {error.reason}"


async def tick(i: int) -> int:
    await asyncio.sleep(0.002)
    return 1


async def test_a_running_instance_sees_a_cancel_at_its_next_await(store) -> None:
    async with running_worker(store, busy) as client:
        handle = await client.start(busy, 100_000, instance_id="busy")
        await handle.wait_for_status("running", timeout=30)
        await asyncio.sleep(0.2)
        await handle.cancel("enough")
        result = await handle.result(timeout=30)
        assert result.startswith("stopped after ") and result.endswith(": enough"), result
        assert LOG[0][0] == "compensate" and 0 < LOG[0][1] < 100_000
