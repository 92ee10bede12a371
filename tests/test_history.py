"""What happened to an instance, in order: the history each save writes, on every store, and
``durable history``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from harness import durable_command, running

from durable import (
    Client,
    DurableBackend,
    PauseForEventException,
    RetryPolicy,
    Worker,
    make_durable,
    sleep,
    step,
    wait_for_event,
)
from durable import history as kinds
from durable.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60
ATTEMPTS: dict[str, int] = {}


def charge(order: str) -> str:
    ATTEMPTS[order] = ATTEMPTS.get(order, 0) + 1
    if ATTEMPTS[order] == 1:
        raise ConnectionError("gateway timed out")
    return f"receipt for {order}"


async def _order(order: str) -> str:
    receipt = await step(charge, order, retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
    await sleep(0.01)
    paid = await wait_for_event("paid")
    return f"{receipt}, paid {paid['amount']}"


order = make_durable(_order)


async def run_to_the_end(backend: DurableBackend, instance_id: str, *args: object) -> str:
    """Call the program again while it pauses (a timer, a retry), as a worker would; publish
    its event once it waits for it."""
    while True:
        try:
            return await order(*args, orchestration_backend=backend, instance_id=instance_id)
        except PauseForEventException as pause:
            if pause.event == "paid":
                backend.publish_event(instance_id, "paid", {"amount": 12})
            await asyncio.sleep(0.02)


async def test_each_primitive_leaves_its_entries_on_every_store(any_store) -> None:
    ATTEMPTS.clear()
    store = any_store
    backend = DurableBackend(store)
    assert await run_to_the_end(backend, "o-1", "o-1") == "receipt for o-1, paid 12"
    entries = await store.history("o-1")
    seen = [entry.kind for entry in entries if entry.kind != kinds.RESUMED]
    assert seen == [kinds.CREATED, kinds.STEP_FAILED, kinds.PAUSED, kinds.STEP_COMPLETED,
                    kinds.TIMER_SET, kinds.PAUSED, kinds.TIMER_FIRED, kinds.PAUSED,
                    kinds.EVENT_CONSUMED, kinds.FINISHED], seen
    by_kind = {entry.kind: entry.data for entry in entries}
    assert by_kind[kinds.CREATED] == {"arguments": {"order": "'o-1'"}}
    failed = by_kind[kinds.STEP_FAILED]
    assert (failed["step"], failed["attempt"], failed["of"], failed["error"]) == (
        "charge", 1, 3, "ConnectionError: gateway timed out")
    assert by_kind[kinds.STEP_COMPLETED]["attempts"] == 2
    assert by_kind[kinds.EVENT_CONSUMED] == {"event": "paid", "payload": "{'amount': 12}"}
    assert by_kind[kinds.FINISHED] == {"result": "'receipt for o-1, paid 12'"}
    assert [entry.kind for entry in entries].count(kinds.RESUMED) >= 2
    numbers = [entry.number for entry in entries]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert [e.number for e in await store.history("o-1", after=numbers[2])] == numbers[3:]


async def test_a_history_keeps_its_most_recent_entries(any_store, monkeypatch) -> None:
    store = any_store
    monkeypatch.setattr(kinds, "KEEP", 6)
    monkeypatch.setattr(kinds, "TRIM_EVERY", 2)

    async def _many(n: int) -> int:
        for i in range(n):
            await step(str, i)
        return n

    many = make_durable(_many)
    assert await many(12, orchestration_backend=DurableBackend(store), instance_id="m") == 12
    entries = await store.history("m")
    assert entries[-1].kind == kinds.FINISHED
    assert 6 <= len(entries) <= 6 + 2  # trimmed to KEEP every TRIM_EVERY entries
    assert entries[0].kind == kinds.STEP_COMPLETED  # the first ones are gone


async def test_what_clients_do_is_in_the_history_and_durable_history_prints_it(
        store_url, tmp_path) -> None:
    ATTEMPTS.clear()
    store = open_store(store_url)
    client = Client(store)
    try:
        await client.start(order, "o-2", instance_id="o-2")
        follow = asyncio.create_task(durable_command(
            tmp_path, "history", "o-2", "--follow", "--json", "--store", store_url))
        async with running(Worker(store, [order], poll_interval=0.05)):
            await client.wait_for_status("o-2", "waiting", timeout=TIMEOUT)
            info = await client.status("o-2")
            while info.waiting_for != "paid":
                await asyncio.sleep(0.05)
                info = await client.status("o-2")
            assert await client.suspend("o-2") and await client.resume("o-2")
            await client.publish_event("o-2", "paid", {"amount": 7})
            assert await client.result("o-2", timeout=TIMEOUT) == "receipt for o-2, paid 7"
        code, out, err = await asyncio.wait_for(follow, TIMEOUT)
        assert code == 0, err
        followed = [json.loads(line) for line in out.splitlines()]
        assert followed[-1]["kind"] == kinds.FINISHED  # --follow printed up to the end
        seen = [entry.kind for entry in await client.history("o-2")]
        assert seen[seen.index(kinds.SUSPENDED) + 1] == kinds.UNSUSPENDED
        assert [entry["kind"] for entry in followed] == seen

        code, out, err = await durable_command(tmp_path, "history", "o-2", "--store", store_url)
        assert code == 0, err
        assert "step attempt failed: step=charge, attempt=1, of=3, error=ConnectionError: " \
               "gateway timed out, retry_at=" in out
        assert "finished: result='receipt for o-2, paid 7'" in out

        await client.start(order, "o-3", instance_id="o-3")
        assert await client.terminate("o-3", "customer left")
        terminated = (await client.history("o-3"))[-1]
        assert (terminated.kind, terminated.data) == (kinds.TERMINATED,
                                                      {"reason": "customer left"})
    finally:
        await store.close()
