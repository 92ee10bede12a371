"""Client: start creates an instance without running it; status, result, list, terminate, publish."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from typing import Any

import pytest

from durable import (
    Client,
    DurableBackend,
    InstanceEndedError,
    InstanceExistsError,
    InstanceHandle,
    InstanceTerminated,
    PauseForEventException,
    SerializationError,
    StoreError,
    UnknownInstanceError,
    make_durable,
)
from durable.client import InstanceNotEnded
from durable.runtime.runtime import DurableRuntime
from durable.stores.base import FAILED, FINISHED, RUNNING, TERMINATED, WAITING
from durable.worker import Worker

CALLS: list[tuple[str, object]] = []


@make_durable
async def greet(name: str, punctuation: str = "!") -> str:
    CALLS.append(("greet", name))
    raise PauseForEventException("allow")
    return f"hello {name}{punctuation}"


@make_durable
async def add(a: int, b: int) -> int:
    CALLS.append(("add", a))
    return a + b


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


@pytest.fixture
def client(store):
    return Client(store)


async def test_start_creates_a_running_instance_and_runs_no_code(client, store) -> None:
    handle = await client.start(greet, "Ada", instance_id="g-1")
    assert isinstance(handle, InstanceHandle) and handle.instance_id == "g-1"
    assert CALLS == []
    info = await handle.status()
    assert (info.instance_id, info.program, info.status) == ("g-1", greet.key, RUNNING)
    assert info.waiting_for is None and info.created_at <= info.updated_at


async def test_start_saves_what_a_fresh_run_saves(client, store) -> None:
    await client.start(add, 1, 2, instance_id="a-1")
    started = await store.load("a-1")
    runtime = DurableRuntime(add, DurableBackend(), "a-1")
    fresh = runtime.initial_state(1, 2)
    for field in ("format", "program", "status", "frames", "saves", "consumed_events"):
        assert started[field] == fresh[field], field


async def test_start_is_idempotent_for_the_same_program_and_arguments(client, store) -> None:
    first = await client.start(add, 1, 2, instance_id="same")
    before = await store.load("same")
    again = await client.start(add, 1, b=2, instance_id="same")  # bound alike: the same start
    assert again == first and first.created and not again.created
    assert await store.load("same") == before
    assert len(await client.list()) == 1
    async with _worker(store, [add]):
        assert await first.result(timeout=60) == 3
    assert not (await client.start(add, 1, 2, instance_id="same")).created  # ended: still it
    assert not client.handle("same").created


_DIGEST_OF_A_START = """
import sys
from durable import make_durable
from durable.runtime.runtime import DurableRuntime
from durable.stores.base import start_digest
from durable.backends import DurableBackend
from durable.stores.memory import InMemoryStateStore

async def greet(name, punctuation="!"):
    return name + punctuation

async def tag(name, labels):
    return name, labels

for program, args in ((make_durable(greet), ("Ada",)),
                      (make_durable(tag), ("Ada", {"red", "green", "blue", "cyan", "teal"}))):
    runtime = DurableRuntime(program, DurableBackend(InMemoryStateStore()), "same")
    state = runtime.initial_state(*args)  # as Client.start makes it
    state["start_digest"] = runtime.start_digest()
    print(start_digest(state))
"""


def test_the_same_start_has_the_same_digest_in_every_process(tmp_path) -> None:
    """Two processes (a client retrying a start, two clients racing) must agree that a start
    is the same one, whatever each process's string hash seed orders sets (and the frame's
    variables) by."""
    module = tmp_path / "digest_of_a_start.py"
    module.write_text(_DIGEST_OF_A_START)
    digests = set()
    for seed in range(10):
        done = subprocess.run([sys.executable, str(module)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}, timeout=120,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        digests.add(tuple(done.stdout.split()))
    assert len(digests) == 1, digests


async def test_start_of_an_existing_id_with_other_arguments_or_program_is_refused(
        client, store) -> None:
    await client.start(add, 1, 2, instance_id="same")
    before = await store.load("same")
    with pytest.raises(InstanceExistsError, match="'same' exists already and it was started "
                                                  "with other arguments") as raised:
        await client.start(add, 40, 2, instance_id="same")
    assert raised.value.differs == "arguments"
    with pytest.raises(InstanceExistsError, match=f"it runs {add.key}, not {greet.key}") as raised:
        await client.start(greet, "Ada", instance_id="same")
    assert raised.value.differs == "program"
    assert await store.load("same") == before
    assert len(await client.list()) == 1


def _start_in_thread(url: str, barrier: threading.Barrier, a: int, outcomes: list[Any]) -> None:
    async def start() -> Any:
        async with Client(url) as client:
            barrier.wait()
            return await client.start(add, a, 2, instance_id="raced")
    try:
        outcomes.append(asyncio.run(start()).created)
    except Exception as error:
        outcomes.append(error)


@pytest.mark.parametrize("arguments", [(1, 1), (1, 5)], ids=["same", "different"])
async def test_two_clients_starting_one_id_at_once(store_url, store, arguments) -> None:
    """Each client in a thread of its own, with its own store: exactly one creates the
    instance; the other gets its handle if it asked for the same, else the error."""
    barrier, outcomes = threading.Barrier(2), []
    threads = [threading.Thread(target=_start_in_thread, args=(store_url, barrier, a, outcomes))
               for a in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert outcomes.count(True) == 1, outcomes
    [other] = [o for o in outcomes if o is not True]
    if arguments[0] == arguments[1]:
        assert other is False
    else:
        assert isinstance(other, InstanceExistsError) and other.differs == "arguments", outcomes
    assert [i.instance_id for i in await Client(store).list()] == ["raced"]


BAD_IDS = [("", "must not be empty"), ("x" * 1001, "1001 characters, at most 1000"),
           ("a\nb", re.escape("control character '\\n' at position 1"))]


@pytest.mark.parametrize(("instance_id", "rule"), BAD_IDS)
async def test_invalid_instance_ids_are_refused_at_every_entry(client, store, instance_id,
                                                                rule) -> None:
    """An empty id used to mean "a new random one": a retried start started again each time."""
    for _ in range(3):
        with pytest.raises(ValueError, match=rule) as raised:
            await client.start(add, 1, 2, instance_id=instance_id)
        assert repr(instance_id)[:50] in str(raised.value) and len(str(raised.value)) < 300
    with pytest.raises(ValueError, match=rule):
        await add(1, 2, orchestration_backend=DurableBackend(store), instance_id=instance_id)
    with pytest.raises(ValueError, match=rule):
        await store.create(instance_id, DurableRuntime(add, DurableBackend(), "x").initial_state(1, 2))
    with pytest.raises(ValueError, match=rule):
        await store.save(instance_id, DurableRuntime(add, DurableBackend(), "x").initial_state(1, 2))
    assert await client.list() == []
    assert CALLS == []


async def test_the_longest_valid_id_starts(client, store) -> None:
    longest = "".join(chr(0x20000 + n * 31) for n in range(1000))  # 4,000 bytes of UTF-8
    handle = await client.start(add, 1, 2, instance_id=longest)
    async with _worker(store, [add]):
        assert await handle.result(timeout=60) == 3


async def test_events_to_an_ended_instance_are_refused(client, store) -> None:
    handle = await client.start(greet, "Ada", instance_id="e-1")
    await handle.terminate("stop")
    with pytest.raises(InstanceEndedError, match="'e-1' has ended \\(terminated\\)"):
        await handle.publish_event("allow")
    assert await store.events("e-1") == []
    assert await handle.cancel("too late") is False


async def test_start_without_an_id_makes_one(client) -> None:
    one = await client.start(add, 1, 2)
    two = await client.start(add, 1, 2)
    assert one.instance_id and two.instance_id and one.instance_id != two.instance_id


async def test_bad_arguments_raise_type_error_at_start(client) -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        await client.start(add, 1, instance_id="bad")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        await client.start(add, 1, 2, c=3, instance_id="bad")
    with pytest.raises(TypeError, match="durable program"):
        await client.start(add.fn, 1, 2)  # type: ignore[arg-type]
    assert await client.list() == []
    assert CALLS == []


async def test_unsaveable_arguments_raise_at_start(client) -> None:
    with pytest.raises(SerializationError):
        await client.start(add, threading.Lock(), 2, instance_id="lock")
    assert await client.list() == []


async def test_unknown_instances_are_errors_that_name_the_store(client, store) -> None:
    for call in (client.status("nope"), client.publish_event("nope", "allow"),
                 client.result("nope", wait=False), client.terminate("nope", "why")):
        with pytest.raises(UnknownInstanceError, match="nope") as raised:
            await call
        assert store.where in str(raised.value)


async def test_result_of_an_unfinished_instance(client) -> None:
    handle = await client.start(greet, "Ada", instance_id="g-2")
    with pytest.raises(InstanceNotEnded, match="running"):
        await handle.result(wait=False)
    with pytest.raises(TimeoutError, match="g-2"):
        await handle.result(timeout=0.05)


async def test_waiting_status_names_the_event_and_the_result_arrives(client, store) -> None:
    handle = await client.start(greet, "Ada", instance_id="g-3")
    async with _worker(store, [greet]):
        info = await client.wait_for_status("g-3", WAITING, timeout=60)
        assert info.waiting_for == "allow"
        with pytest.raises(InstanceNotEnded, match="waiting for event 'allow'"):
            await handle.result(wait=False)
        waiter = asyncio.create_task(handle.result(timeout=60))
        await handle.publish_event("allow", {"by": "admin"})
        assert await waiter == "hello Ada!"
    info = await handle.status()
    assert info.status == FINISHED and info.waiting_for is None
    assert await handle.result(wait=False) == "hello Ada!"


async def test_wait_for_status_returns_at_the_status_or_at_the_end(client, store) -> None:
    waits = await client.start(greet, "Ada", instance_id="w-1")
    ends = await client.start(add, 1, 2, instance_id="w-2")
    with pytest.raises(TimeoutError, match=r"'w-1' did not become waiting within 0.05 s \(it is running"):
        await waits.wait_for_status(WAITING, timeout=0.05)
    with pytest.raises(ValueError, match="unknown status 'paused'"):
        await waits.wait_for_status("paused")
    async with _worker(store, [greet, add]):
        assert (await waits.wait_for_status(WAITING, timeout=60)).waiting_for == "allow"
        # An ended instance changes no more: the wait returns with the status it ended in.
        assert (await ends.wait_for_status(WAITING, timeout=60)).status == FINISHED


async def test_list_filters_by_status(client, store) -> None:
    await client.start(greet, "Ada", instance_id="waits")
    await client.start(add, 1, 2, instance_id="ends")
    async with _worker(store, [greet, add]):
        await client.result("ends", timeout=60)
        await client.wait_for_status("waits", WAITING, timeout=60)
    assert {i.instance_id for i in await client.list()} == {"waits", "ends"}
    assert [i.instance_id for i in await client.list(WAITING)] == ["waits"]
    assert [i.instance_id for i in await client.list(status=FINISHED)] == ["ends"]
    assert await client.list(FAILED) == []
    with pytest.raises(ValueError, match="unknown status"):
        await client.list("paused")


async def test_terminate(client) -> None:
    handle = await client.start(greet, "Ada", instance_id="t-1")
    assert await handle.terminate("no longer needed") is True
    info = await handle.status()
    assert (info.status, info.reason) == (TERMINATED, "no longer needed")
    with pytest.raises(InstanceTerminated, match="no longer needed"):
        await handle.result()
    assert await client.terminate("t-1", "again") is False
    assert CALLS == []


async def test_a_client_opens_a_store_url(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'url.db'}"
    async with Client(url) as client:
        await client.start(add, 1, 2, instance_id="u-1")
    monkeypatch.setenv("DURABLE_STORE", url)
    async with Client() as client:
        assert (await client.status("u-1")).status == RUNNING


async def test_stores_that_cannot_be_shared_are_refused() -> None:
    with pytest.raises(StoreError, match="sqlite"):
        Client("memory://")
    with pytest.raises(StoreError, match="unknown store URL"):
        Client("mysql://somewhere/db")


class _worker:
    """A worker running in the background for the duration of a ``with`` block."""

    def __init__(self, store, programs) -> None:
        self.worker = Worker(store, programs, concurrency=10)

    async def __aenter__(self) -> Worker:
        self.task = asyncio.create_task(self.worker.run())
        return self.worker

    async def __aexit__(self, *exc_info: object) -> None:
        self.worker.stop()
        await asyncio.wait_for(self.task, 60)



async def test_a_call_fails_with_a_store_error_when_the_store_does_not_answer(store) -> None:
    """A store that hangs (a database stopped mid-answer) fails a client call within the
    client's timeout, instead of hanging the caller."""
    client = Client(store, timeout=0.2)
    await client.start(add, 1, 2, instance_id="t-1")

    async def hangs(instance_id):
        await asyncio.sleep(3600)
    store.info = hangs
    with pytest.raises(StoreError, match=r"did not answer within 0\.2 s"):
        await asyncio.wait_for(client.status("t-1"), 60)  # a client that hangs fails the test
    with pytest.raises(ValueError, match="timeout"):
        Client(store, timeout=0)


async def test_a_cancelled_call_stays_cancelled_when_the_store_answers_at_once(store) -> None:
    """Cancelling a client call (Ctrl-C on `durable result --wait`) as the store answers
    cancels it: the call's timeout must not swallow the cancellation, or a waiting caller
    waits on for ever (asyncio.wait_for on 3.11 returned the answer instead)."""
    client = Client(store)
    await client.start(add, 1, 2, instance_id="c-1")
    answer = store.info
    waiting: asyncio.Task[None] | None = None

    async def answers_as_it_is_cancelled(instance_id):
        found = await answer(instance_id)
        assert waiting is not None
        waiting.cancel()  # lands while the call is answering
        return found
    store.info = answers_as_it_is_cancelled

    async def wait_for_ever() -> None:
        while True:
            await client.status("c-1")
            await asyncio.sleep(0.01)
    waiting = asyncio.create_task(wait_for_ever())
    done, _ = await asyncio.wait([waiting], timeout=10)
    assert done, "the cancellation was lost: the caller went on waiting"
    assert waiting.cancelled()
