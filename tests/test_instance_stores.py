"""Conformance of every InstanceStore (the stores workers and clients share).

The seed-level behaviour (load/save/events) is checked for every store in
``test_stores.py``; this file checks what workers rely on: idempotent
creation, claims under fenced leases, saves that consume events in the same
transaction, listing, termination and wake-ups.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import pytest

from durable import (
    InstanceEndedError,
    InstanceExistsError,
    LeaseLost,
    UnknownInstanceError,
)
from durable.runtime import envelope
from durable.stores import open_store
from durable.stores.base import terminated


def state(status: str = envelope.RUNNING, program: str = "m:main", waiting_for: str | None = None,
          consumed: tuple[str, ...] = (), marker: Any = None,
          wake_at: float | None = None) -> dict[str, Any]:
    saved = envelope.envelope(program, status, [b"frame"], saves=1, waiting_for=waiting_for,
                              wake_at=wake_at, consumed_events=consumed)
    saved["marker"] = marker
    return saved


async def test_create_is_idempotent(store) -> None:
    assert await store.create("a", state(marker=1))
    assert not await store.create("a", state(marker=2))
    assert (await store.load("a"))["marker"] == 1
    info = await store.info("a")
    assert (info.instance_id, info.program, info.status) == ("a", "m:main", "running")


def with_frames(frames: list[bytes], **options: Any) -> dict[str, Any]:
    """A start of the same program with other arguments (they are in its first frame)."""
    return {**state(**options), "frames": frames}


async def test_create_of_an_existing_id_compares_the_program_and_the_arguments(store) -> None:
    assert await store.create("a", state(marker=1))
    assert not await store.create("a", state(marker=2))  # the same start: nothing changes
    with pytest.raises(InstanceExistsError, match="'a' exists already and it runs m:main, "
                                                  "not m:other") as raised:
        await store.create("a", state(program="m:other"))
    assert raised.value.differs == "program" and raised.value.instance_id == "a"
    with pytest.raises(InstanceExistsError, match="'a' exists already and it was started with "
                                                  "other arguments") as raised:
        await store.create("a", with_frames([b"other arguments"]))
    assert raised.value.differs == "arguments"
    assert (await store.load("a"))["marker"] == 1


async def test_an_instance_saved_without_a_start_is_compared_by_its_program(store) -> None:
    await store.save("seed", state())  # as a program call saves it: no digest of a start
    assert not await store.create("seed", with_frames([b"whatever it was called with"]))
    with pytest.raises(InstanceExistsError, match="m:other"):
        await store.create("seed", state(program="m:other"))


class _Together:
    """Two store objects over one database, each driven by a thread of its own: what two
    processes starting the same instance at the same moment do."""

    def __init__(self, url: str) -> None:
        self.stores = [open_store(url), open_store(url)]

    def create(self, instance_id: str, states: list[dict[str, Any]]) -> list[Any]:
        barrier = threading.Barrier(2)
        outcomes: list[Any] = [None, None]

        def start(n: int) -> None:
            async def create() -> bool:
                barrier.wait()
                return await self.stores[n].create(instance_id, states[n])
            try:
                outcomes[n] = asyncio.run(create())
            except Exception as error:
                outcomes[n] = error
        threads = [threading.Thread(target=start, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    async def close(self) -> None:
        for opened in self.stores:
            await opened.close()


async def test_concurrent_starts_of_one_id_create_it_once(store, store_url) -> None:
    together = _Together(store_url)
    try:
        for n in range(15):
            outcomes = await asyncio.to_thread(together.create, f"same-{n}", [state(), state()])
            assert sorted(outcomes) == [False, True], outcomes
            different = [state(), with_frames([b"other arguments"])]
            outcomes = await asyncio.to_thread(together.create, f"clash-{n}", different)
            assert outcomes.count(True) == 1, outcomes
            [refused] = [o for o in outcomes if o is not True]
            assert isinstance(refused, InstanceExistsError), outcomes
            assert refused.differs == "arguments"
    finally:
        await together.close()
    assert len(await store.list()) == 30


async def test_events_to_unknown_or_ended_instances_are_refused(store) -> None:
    with pytest.raises(UnknownInstanceError, match=re.escape(f"no instance 'nobody' in {store.where}")):
        await store.publish("nobody", "go")
    with pytest.raises(UnknownInstanceError, match="nobody"):
        await asyncio.to_thread(store.append_event, "nobody", "go")
    await store.create("i", state(envelope.PAUSED, waiting_for="go"))
    await store.publish("i", "go")
    assert await store.terminate("i", "done with it")
    with pytest.raises(InstanceEndedError, match=r"'late' not published: instance 'i' has "
                                                 r"ended \(terminated\)"):
        await store.publish("i", "late")
    await store.save("f", state(envelope.COMPLETED))
    with pytest.raises(InstanceEndedError, match="finished"):
        await asyncio.to_thread(store.append_event, "f", "late")
    assert await store.events("nobody") == await store.events("i") == await store.events("f") == []


async def test_the_longest_valid_ids_work_everywhere(store) -> None:
    """1,000 characters; the second is 4,000 bytes of UTF-8 that do not compress."""
    ids = ["a" * 1000, "".join(chr(0x20000 + (n * 7919) % 0xA000) for n in range(1000))]
    for instance_id in ids:
        assert await store.create(instance_id, state(envelope.PAUSED, waiting_for="go"))
        assert not await store.create(instance_id, state(envelope.PAUSED, waiting_for="go"))
        event_id = await store.publish(instance_id, "go", b"payload")
        assert await store.events(instance_id) == [(event_id, "go")]
    leases = await store.claim("w", ["m:main"], 10, 30)
    assert sorted(lease.instance_id for lease in leases) == sorted(ids)
    for lease in leases:
        [(event_id, _)] = lease.events
        assert await store.payload(lease.instance_id, event_id) == b"payload"
        await store.save_leased(lease, state(envelope.COMPLETED, consumed=(event_id,)))
        assert await store.events(lease.instance_id) == []
        assert (await store.info(lease.instance_id)).status == "finished"
    await store.save(ids[0], state(marker="saved again"))
    assert (await store.load(ids[0]))["marker"] == "saved again"
    assert await store.terminate(ids[0], "stop")  # running again since that save
    assert {info.instance_id for info in await store.list()} == set(ids)


async def test_unknown_instance(store) -> None:
    assert await store.load("nobody") is None
    assert await store.info("nobody") is None
    with pytest.raises(UnknownInstanceError, match="nobody"):
        await store.terminate("nobody", "why")


async def test_claim_takes_runnable_instances_of_its_programs_once(store) -> None:
    await store.create("run", state())
    await store.create("other", state(program="m:other"))
    await store.create("wait", state(envelope.PAUSED, waiting_for="go"))
    leases = await store.claim("w1", ["m:main"], 10, 30)
    assert [(lease.instance_id, lease.program, lease.owner) for lease in leases] == [
        ("run", "m:main", "w1")]
    # Held by w1: another worker gets only what is left.
    others = await store.claim("w2", ["m:main", "m:other"], 10, 30)
    assert [lease.instance_id for lease in others] == ["other"]
    assert (await store.info("run")).lease_owner == "w1"


async def test_a_waiting_instance_is_runnable_once_its_event_arrives(store) -> None:
    await store.create("wait", state(envelope.PAUSED, waiting_for="go"))
    await store.publish("wait", "other event")
    assert await store.claim("w", ["m:main"], 10, 30) == []
    event_id = await store.publish("wait", "go", b"payload")
    assert [name for _, name in await store.events("wait")] == ["other event", "go"]
    [lease] = await store.claim("w", ["m:main"], 10, 30)
    # Saving the state that consumed the event deletes it in the same transaction.
    await store.save_leased(lease, state(consumed=(event_id,)))
    assert [name for _, name in await store.events("wait")] == ["other event"]


async def test_a_claim_hands_over_the_state_and_the_events_as_they_were(store) -> None:
    waiting = state(envelope.PAUSED, waiting_for="go")
    await store.create("wait", waiting)
    await store.create("run", state())
    await store.publish("wait", "other event")
    await store.publish("wait", "go", b"payload")
    leases = {lease.instance_id: lease for lease in await store.claim("w", ["m:main"], 10, 30)}
    assert leases["wait"].state == await store.load("wait") == waiting
    assert leases["wait"].events == await store.events("wait")
    assert [name for _, name in leases["wait"].events] == ["other event", "go"]
    assert leases["run"].events == []


async def test_events_published_synchronously_are_kept_in_order(store) -> None:
    await store.create("i", state(envelope.PAUSED, waiting_for="b"))
    ids = [await asyncio.to_thread(store.append_event, "i", name) for name in "abc"]
    assert await store.events("i") == list(zip(ids, "abc", strict=True))
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)


async def test_limit_is_respected(store) -> None:
    for n in range(5):
        await store.create(f"i{n}", state())
    first = await store.claim("w", ["m:main"], 3, 30)
    rest = await store.claim("w", ["m:main"], 3, 30)
    assert len(first) == 3 and len(rest) == 2
    assert {lease.instance_id for lease in first + rest} == {f"i{n}" for n in range(5)}


async def test_an_expired_lease_is_fenced_off(store) -> None:
    await store.create("i", state(marker="start"))
    [stale] = await store.claim("slow", ["m:main"], 1, 0)  # expires at once
    await asyncio.sleep(0.01)
    [fresh] = await store.claim("fast", ["m:main"], 1, 30)
    assert fresh.token > stale.token
    await store.save_leased(fresh, state(marker="new"))
    with pytest.raises(LeaseLost):
        await store.save_leased(stale, state(marker="stale"))
    assert (await store.load("i"))["marker"] == "new"
    assert await store.renew([stale, fresh], 30) == [stale]


async def test_a_save_that_pauses_or_ends_gives_the_lease_back(store) -> None:
    await store.create("i", state())
    [lease] = await store.claim("w", ["m:main"], 1, 30)
    await store.save_leased(lease, state())  # still running: still leased
    assert (await store.info("i")).lease_owner == "w"
    assert await store.claim("x", ["m:main"], 1, 30) == []
    await store.save_leased(lease, state(envelope.PAUSED, waiting_for="go"))
    info = await store.info("i")
    assert (info.status, info.waiting_for, info.lease_owner) == ("waiting", "go", None)
    await store.publish("i", "go")
    [again] = await store.claim("x", ["m:main"], 1, 30)
    await store.save_leased(again, state(envelope.COMPLETED))
    assert (await store.info("i")).status == "finished"
    assert await store.claim("x", ["m:main"], 1, 30) == []


async def test_release_makes_it_runnable_again(store) -> None:
    await store.create("i", state())
    [lease] = await store.claim("w", ["m:main"], 1, 30)
    await store.release(lease)
    [again] = await store.claim("v", ["m:main"], 1, 30)
    assert again.token > lease.token


async def test_a_failed_save_in_a_batch_does_not_undo_the_others(store) -> None:
    for n in range(3):
        await store.create(f"i{n}", state())
    leases = await store.claim("w", ["m:main"], 3, 30)
    lost = leases[1]
    await store.release(lost)
    await store.claim("thief", ["m:main"], 1, 30)
    outcomes = await asyncio.gather(*(store.save_leased(lease, state(marker=lease.instance_id))
                                      for lease in leases), return_exceptions=True)
    assert isinstance(outcomes[1], LeaseLost)
    assert outcomes[0] is None and outcomes[2] is None
    for lease in (leases[0], leases[2]):
        assert (await store.load(lease.instance_id))["marker"] == lease.instance_id


async def test_list_and_status(store) -> None:
    await store.create("a", state())
    await store.create("b", state(envelope.PAUSED, waiting_for="go"))
    await store.save("c", state(envelope.COMPLETED))
    assert {info.instance_id for info in await store.list()} == {"a", "b", "c"}
    assert [info.instance_id for info in await store.list(status="waiting")] == ["b"]
    assert [info.instance_id for info in await store.list(status="finished")] == ["c"]
    info = await store.info("b")
    assert info.created_at <= info.updated_at <= time.time() + 1


async def test_terminate_fences_the_holder_and_drops_events(store) -> None:
    await store.create("i", state())
    await store.publish("i", "go")
    [lease] = await store.claim("w", ["m:main"], 1, 30)
    assert await store.terminate("i", "operator said so")
    with pytest.raises(LeaseLost):
        await store.save_leased(lease, state())
    info = await store.info("i")
    assert (info.status, info.reason) == ("terminated", "operator said so")
    saved = await store.load("i")
    assert saved == {**saved, **terminated(state(), "operator said so"), "updated_at": saved["updated_at"]}
    assert await store.events("i") == []
    assert not await store.terminate("i", "again")
    assert await store.claim("w", ["m:main"], 1, 30) == []


async def test_many_concurrent_saves_share_commits(store) -> None:
    for n in range(50):
        await store.create(f"i{n}", state())
    leases = await store.claim("w", ["m:main"], 50, 30)
    before = store.commits
    await asyncio.gather(*(store.save_leased(lease, state(marker=n))
                           for n, lease in enumerate(leases)))
    assert store.commits - before < len(leases)


async def test_a_publish_wakes_a_waiting_worker(store) -> None:
    await store.create("i", state(envelope.PAUSED, waiting_for="go"))
    await store.wait_for_change(0)  # see everything so far

    async def publish_later() -> None:
        await asyncio.sleep(0.05)
        await asyncio.to_thread(store.append_event, "i", "go")

    publisher = asyncio.create_task(publish_later())
    await store.wait_for_change(60)  # returns because of the publish, not the timeout
    assert publisher.done() or await asyncio.wait_for(publisher, 5) is None
    assert [lease.instance_id for lease in await store.claim("w", ["m:main"], 1, 30)] == ["i"]


async def test_a_change_from_another_store_object_wakes_a_waiter(store, store_url) -> None:
    # Another object over the same database: to a store, the same as another process.
    other = open_store(store_url)
    try:
        await store.wait_for_change(0)
        waiter = asyncio.create_task(store.wait_for_change(60))
        await asyncio.sleep(0.05)
        await other.create("i", state())
        await asyncio.wait_for(waiter, 30)
    finally:
        await other.close()


async def test_saves_that_make_no_work_wake_no_waiter(store) -> None:
    """A running instance's saves (a step done) make no work for anyone: waiters sleep on."""
    await store.create("i", state())
    [lease] = await store.claim("w", ["m:main"], 1, 30)  # watching from here on
    await asyncio.sleep(0.1)
    await store.wait_for_change(0)  # everything so far seen

    async def steps() -> None:
        for n in range(5):
            await store.save_leased(lease, state(marker=n))
            await asyncio.sleep(0.02)
    saving = asyncio.create_task(steps())
    started = time.monotonic()
    await store.wait_for_change(0.5)
    assert time.monotonic() - started >= 0.45, "a save that made no work woke the waiter"
    await saving


async def test_a_waiting_instance_is_runnable_once_its_time_has_come(store) -> None:
    now = 1_000_000.0
    await store.create("timer", state(envelope.PAUSED, wake_at=now + 60))
    await store.create("timeout", state(envelope.PAUSED, waiting_for="go", wake_at=now + 30))
    await store.create("forever", state(envelope.PAUSED, waiting_for="go"))
    await store.create("elsewhere", state(envelope.PAUSED, program="m:other", wake_at=now + 1))
    assert (await store.info("timer")).wake_at == now + 60
    assert await store.next_wake(["m:main"]) == now + 30
    assert await store.next_wake(["m:other", "m:main"]) == now + 1
    assert await store.next_wake(["m:none"]) is None
    assert await store.claim("w", ["m:main"], 10, 30, now=now + 29) == []
    [lease] = await store.claim("w", ["m:main"], 10, 30, now=now + 30)
    assert lease.instance_id == "timeout"
    # Still waiting for its timer: saved paused again with the same wake-up, it is not runnable
    # before then, and the time that came once does not make it runnable for ever.
    await store.save_leased(lease, state(envelope.PAUSED, waiting_for="go", wake_at=now + 90))
    claimed = await store.claim("w", ["m:main"], 10, 30, now=now + 60)
    assert [taken.instance_id for taken in claimed] == ["timer"]
    assert await store.next_wake(["m:main"]) == now + 60  # timer is leased, not ended
    [lease] = await store.claim("w", ["m:main"], 10, 30, now=now + 90)
    assert lease.instance_id == "timeout"
    await store.save_leased(lease, state(envelope.COMPLETED))
    assert (await store.info("timeout")).wake_at is None


async def test_termination_clears_the_timer(store) -> None:
    await store.create("t", state(envelope.PAUSED, wake_at=5.0))
    assert await store.terminate("t", "stop")
    assert (await store.info("t")).wake_at is None
    assert await store.next_wake(["m:main"]) is None
    assert await store.claim("w", ["m:main"], 10, 30, now=10.0) == []


async def test_any_event_a_waiting_instance_waits_for_makes_it_runnable(store) -> None:
    waiting = state(envelope.PAUSED, waiting_for="a")
    waiting["waiting_events"] = ["a", "b"]  # two branches wait, for a and for b
    await store.create("fan", waiting)
    await store.publish("fan", "c")  # nobody waits for c
    assert await store.claim("w", ["m:main"], 10, 30) == []
    await store.publish("fan", "b")
    [lease] = await store.claim("w", ["m:main"], 10, 30)
    assert lease.instance_id == "fan"


async def test_a_suspended_instance_is_not_claimed(store) -> None:
    await store.create("s", state())
    assert await store.suspend("s") is True
    assert (await store.info("s")).status == "suspended"
    assert await store.claim("w", ["m:main"], 10, 30) == []
    assert await store.resume("s") is True
    assert (await store.info("s")).status == "running"
    assert [lease.instance_id for lease in await store.claim("w", ["m:main"], 10, 30)] == ["s"]
    with pytest.raises(UnknownInstanceError):
        await store.suspend("nobody")
