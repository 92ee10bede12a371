"""Runtime and backend behaviour through the public API: pauses, events, finished and failed instances."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest
from harness import SeedStyleStore, created

from durable import (
    DiskStateStore,
    DurableBackend,
    FailedInstanceError,
    InMemoryStateStore,
    InstanceEndedError,
    OrchestrationBackend,
    PauseForEventException,
    StateStore,
    UnknownInstanceError,
    UnsupportedPauseError,
    make_durable,
)

EFFECTS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _clear_effects():
    EFFECTS.clear()


@pytest.fixture(params=["memory", "disk"])
def backend(request, tmp_path) -> DurableBackend:
    if request.param == "memory":
        return DurableBackend(InMemoryStateStore())
    return DurableBackend(DiskStateStore(tmp_path))


# --- programs -------------------------------------------------------------------------------
async def charge(amount: int) -> int:
    EFFECTS[f"charge {amount}"] += 1
    return amount


async def checkout(amount: int) -> str:
    EFFECTS["begin"] += 1
    paid = await charge(amount)
    raise PauseForEventException("shipped")
    EFFECTS["after shipped"] += 1
    return f"paid {paid}, shipped"


async def two_approvals(name: str) -> list[str]:
    steps = [name]
    for n in range(2):
        EFFECTS[f"wait {n}"] += 1
        raise PauseForEventException("approve")
        steps.append(f"approved {n}")
    EFFECTS["done"] += 1
    return steps


class OrderError(Exception):
    def __init__(self, order: str, reason: str) -> None:
        super().__init__(f"order {order}: {reason}")
        self.order = order
        self.reason = reason


async def failing(kind: str) -> None:
    EFFECTS["ran"] += 1
    await charge(1)
    if kind == "value":
        raise ValueError("bad value 42")
    if kind == "key":
        raise KeyError("missing-key")
    if kind == "custom":
        raise OrderError("o-9", "card declined")
    raise RuntimeError(kind)


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


async def failing_unpicklably() -> None:
    EFFECTS["ran"] += 1
    raise Unpicklable("holds a lock")


checkout_p = make_durable(checkout)
approvals_p = make_durable(two_approvals)
failing_p = make_durable(failing)
unpicklable_p = make_durable(failing_unpicklably)


async def paused(call) -> PauseForEventException:
    with pytest.raises(PauseForEventException) as caught:
        await call
    return caught.value


# --- pausing and resuming ----------------------------------------------------------------------
async def test_resuming_before_the_event_pauses_again_without_running_anything(backend) -> None:
    first = await paused(checkout_p(5, orchestration_backend=backend, instance_id="c"))
    assert first.event == "shipped"
    assert EFFECTS == {"begin": 1, "charge 5": 1}
    for _ in range(3):
        again = await paused(checkout_p(999, orchestration_backend=backend, instance_id="c"))
        assert type(again) is PauseForEventException
        assert again.event == "shipped"
        assert str(again) == str(first)
    assert EFFECTS == {"begin": 1, "charge 5": 1}
    backend.publish_event("c", "shipped")
    assert await checkout_p(999, orchestration_backend=backend, instance_id="c") == "paid 5, shipped"
    assert EFFECTS == {"begin": 1, "charge 5": 1, "after shipped": 1}


async def test_resuming_with_a_new_backend_over_the_same_store(tmp_path) -> None:
    await paused(checkout_p(5, orchestration_backend=DurableBackend(DiskStateStore(tmp_path)),
                            instance_id="c"))
    await paused(checkout_p(5, orchestration_backend=DurableBackend(DiskStateStore(tmp_path)),
                            instance_id="c"))
    DurableBackend(DiskStateStore(tmp_path)).publish_event("c", "shipped")
    result = await checkout_p(5, orchestration_backend=DurableBackend(DiskStateStore(tmp_path)),
                              instance_id="c")
    assert result == "paid 5, shipped"
    assert EFFECTS == {"begin": 1, "charge 5": 1, "after shipped": 1}


async def test_event_published_before_the_pause_is_consumed_there(backend) -> None:
    await created(checkout_p, backend, "c", 7)  # started, not yet run
    backend.publish_event("c", "shipped")
    assert await checkout_p(7, orchestration_backend=backend, instance_id="c") == "paid 7, shipped"
    assert EFFECTS == {"begin": 1, "charge 7": 1, "after shipped": 1}
    assert await backend.take_event("c", "shipped") is None


async def test_events_of_other_names_and_instances_are_not_consumed(backend) -> None:
    await created(checkout_p, backend, "c", 1)
    await created(checkout_p, backend, "other", 1)
    backend.publish_event("c", "delivered")
    backend.publish_event("other", "shipped")
    await paused(checkout_p(1, orchestration_backend=backend, instance_id="c"))
    backend.publish_event("c", "shipped")
    assert await checkout_p(1, orchestration_backend=backend, instance_id="c") == "paid 1, shipped"
    assert await backend.take_event("c", "delivered") is not None
    assert await backend.take_event("other", "shipped") is not None


async def test_each_publish_is_consumed_by_one_wait(backend) -> None:
    await created(approvals_p, backend, "a", "x")
    backend.publish_event("a", "approve")
    first = await paused(approvals_p("x", orchestration_backend=backend, instance_id="a"))
    assert first.event == "approve"
    assert EFFECTS == {"wait 0": 1, "wait 1": 1}  # the one event let only the first wait through
    await paused(approvals_p("x", orchestration_backend=backend, instance_id="a"))
    backend.publish_event("a", "approve")
    assert await approvals_p("x", orchestration_backend=backend, instance_id="a") == [
        "x", "approved 0", "approved 1"]
    assert EFFECTS == {"wait 0": 1, "wait 1": 1, "done": 1}
    assert await backend.take_event("a", "approve") is None


async def test_two_publishes_let_two_waits_through(backend) -> None:
    await created(approvals_p, backend, "a", "y")
    backend.publish_event("a", "approve")
    backend.publish_event("a", "approve")
    backend.publish_event("a", "approve")
    assert await approvals_p("y", orchestration_backend=backend, instance_id="a") == [
        "y", "approved 0", "approved 1"]
    assert EFFECTS == {"wait 0": 1, "wait 1": 1, "done": 1}
    # Exactly two were consumed: the third is still there for whoever waits next.
    assert await backend.take_event("a", "approve") is not None
    events = await backend.state_store.events("a")
    assert [name for _, name in events] == ["approve"]


async def test_publish_twice_while_paused_twice(backend) -> None:
    await paused(approvals_p("z", orchestration_backend=backend, instance_id="a"))
    backend.publish_event("a", "approve")
    await paused(approvals_p("z", orchestration_backend=backend, instance_id="a"))
    assert EFFECTS == {"wait 0": 1, "wait 1": 1}
    backend.publish_event("a", "approve")
    assert await approvals_p("z", orchestration_backend=backend, instance_id="a") == [
        "z", "approved 0", "approved 1"]
    assert await backend.state_store.events("a") == []


# --- finished and failed instances -----------------------------------------------------------------
async def test_finished_instance_returns_its_stored_result_without_running(backend) -> None:
    await created(checkout_p, backend, "c", 3)
    backend.publish_event("c", "shipped")
    assert await checkout_p(3, orchestration_backend=backend, instance_id="c") == "paid 3, shipped"
    effects = dict(EFFECTS)
    with pytest.raises(InstanceEndedError, match="'c' has ended"):  # nothing would consume it
        backend.publish_event("c", "shipped")
    for _ in range(2):
        assert await checkout_p(100, orchestration_backend=backend, instance_id="c") == "paid 3, shipped"
    assert effects == EFFECTS
    assert await backend.take_event("c", "shipped") is None


async def test_events_to_an_unknown_instance_are_refused(backend) -> None:
    with pytest.raises(UnknownInstanceError, match="no instance 'typo'"):
        backend.publish_event("typo", "shipped")
    assert await backend.events("typo") == []


@pytest.mark.parametrize(("kind", "error_type", "message"), [
    ("value", ValueError, "bad value 42"),
    ("key", KeyError, "'missing-key'"),
    ("custom", OrderError, "order o-9: card declined"),
    ("other", RuntimeError, "other"),
])
async def test_uncaught_error_reaches_the_caller_and_is_raised_again(
        backend, kind, error_type, message) -> None:
    with pytest.raises(error_type) as first:
        await failing_p(kind, orchestration_backend=backend, instance_id="f")
    assert type(first.value) is error_type
    assert str(first.value) == message
    assert EFFECTS == {"ran": 1, "charge 1": 1}
    for _ in range(2):
        with pytest.raises(error_type) as again:
            await failing_p("value", orchestration_backend=backend, instance_id="f")
        assert type(again.value) is error_type
        assert str(again.value) == message
        assert again.value.args == first.value.args
    if kind == "custom":
        assert (again.value.order, again.value.reason) == ("o-9", "card declined")
    assert EFFECTS == {"ran": 1, "charge 1": 1}


async def test_failed_instance_is_raised_again_by_a_new_backend(tmp_path) -> None:
    with pytest.raises(OrderError):
        await failing_p("custom", orchestration_backend=DurableBackend(DiskStateStore(tmp_path)),
                        instance_id="f")
    with pytest.raises(OrderError, match="order o-9: card declined"):
        await failing_p("custom", orchestration_backend=DurableBackend(DiskStateStore(tmp_path)),
                        instance_id="f")
    assert EFFECTS == {"ran": 1, "charge 1": 1}


async def test_unpicklable_error_is_raised_as_is_then_stands_in(backend) -> None:
    with pytest.raises(Unpicklable, match="holds a lock"):
        await unpicklable_p(orchestration_backend=backend, instance_id="u")
    with pytest.raises(FailedInstanceError) as again:
        await unpicklable_p(orchestration_backend=backend, instance_id="u")
    assert again.value.type_name == "Unpicklable"
    assert again.value.message == "holds a lock"
    assert EFFECTS == {"ran": 1}


# --- a backend written against the seed interface ------------------------------------------------
class SeedBackend(OrchestrationBackend):
    """Only load_state / save_state / wait_for_event; wait_for_event blocks until a publish."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.published: Counter[tuple[str, str]] = Counter()
        self.condition = asyncio.Condition()
        self.waits: list[tuple[str, str]] = []

    async def load_state(self, instance_id: str) -> dict[str, Any] | None:
        return self.states.get(instance_id)

    async def save_state(self, instance_id: str, state: dict[str, Any]) -> None:
        self.states[instance_id] = state  # kept as given: no copy

    async def wait_for_event(self, instance_id: str, event_name: str) -> None:
        self.waits.append((instance_id, event_name))
        async with self.condition:
            await self.condition.wait_for(lambda: self.published[instance_id, event_name] > 0)
            self.published[instance_id, event_name] -= 1

    async def publish(self, instance_id: str, event_name: str) -> None:
        async with self.condition:
            self.published[instance_id, event_name] += 1
            self.condition.notify_all()


async def test_seed_style_backend_plugs_in(tmp_path) -> None:
    backend = SeedBackend()
    first = await paused(checkout_p(4, orchestration_backend=backend, instance_id="s"))
    assert first.event == "shipped"
    assert backend.states["s"]["status"] == "paused"
    resumed = asyncio.ensure_future(checkout_p(4, orchestration_backend=backend, instance_id="s"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not resumed.done()  # blocked in wait_for_event until the publish
    assert backend.waits == [("s", "shipped")]
    assert EFFECTS == {"begin": 1, "charge 4": 1}
    await backend.publish("s", "shipped")
    assert await resumed == "paid 4, shipped"
    assert EFFECTS == {"begin": 1, "charge 4": 1, "after shipped": 1}
    assert backend.states["s"]["status"] == "completed"
    assert await checkout_p(4, orchestration_backend=backend, instance_id="s") == "paid 4, shipped"
    assert EFFECTS == {"begin": 1, "charge 4": 1, "after shipped": 1}


async def test_seed_style_backend_with_the_event_published_before_resuming() -> None:
    backend = SeedBackend()
    await paused(approvals_p("q", orchestration_backend=backend, instance_id="s"))
    await backend.publish("s", "approve")
    await paused(approvals_p("q", orchestration_backend=backend, instance_id="s"))
    await backend.publish("s", "approve")
    assert await approvals_p("q", orchestration_backend=backend, instance_id="s") == [
        "q", "approved 0", "approved 1"]
    assert backend.waits == [("s", "approve"), ("s", "approve")]
    assert EFFECTS == {"wait 0": 1, "wait 1": 1, "done": 1}


async def test_seed_style_backend_sees_uncaught_errors_and_results() -> None:
    backend = SeedBackend()
    with pytest.raises(OrderError, match="card declined"):
        await failing_p("custom", orchestration_backend=backend, instance_id="f")
    assert backend.states["f"]["status"] == "failed"
    with pytest.raises(OrderError, match="card declined"):
        await failing_p("custom", orchestration_backend=backend, instance_id="f")
    assert EFFECTS == {"ran": 1, "charge 1": 1}


# --- DurableBackend over a store with only load/save ------------------------------------------------
async def test_durable_backend_keeps_events_in_memory_for_a_plain_store() -> None:
    store = SeedStyleStore()
    backend = DurableBackend(store)
    backend.publish_event("a", "approve")  # before the instance waits: kept
    await paused(approvals_p("m", orchestration_backend=backend, instance_id="a"))
    assert EFFECTS == {"wait 0": 1, "wait 1": 1}
    assert list(store.blobs) == ["a"]  # the store only ever holds states

    # The events live in this backend object: another one over the same store has none.
    other = DurableBackend(store)
    other_pause = await paused(approvals_p("m", orchestration_backend=other, instance_id="a"))
    assert other_pause.event == "approve"

    backend.publish_event("a", "approve")
    backend.publish_event("a", "approve")
    assert await approvals_p("m", orchestration_backend=backend, instance_id="a") == [
        "m", "approved 0", "approved 1"]
    assert EFFECTS == {"wait 0": 1, "wait 1": 1, "done": 1}
    # One of the two publishes was consumed, the other is still kept in memory.
    assert await backend.take_event("a", "approve") is not None
    assert await other.take_event("a", "approve") is None


# --- DurableBackend.wait_for_event -------------------------------------------------------------
async def _wait_then_publish(backend: DurableBackend, event: str) -> str:
    if await backend.load_state("w") is None:  # events go to an instance that exists
        await created(checkout_p, backend, "w", 1)

    async def publish_soon() -> None:
        await asyncio.sleep(0)
        backend.publish_event("w", event)

    publisher = asyncio.ensure_future(publish_soon())
    await backend.wait_for_event("w", event)
    await publisher
    return event


async def test_wait_for_event_returns_once_published_and_does_not_consume(backend) -> None:
    assert await _wait_then_publish(backend, "ready") == "ready"
    await backend.wait_for_event("w", "ready")  # already there: returns at once
    assert await backend.take_event("w", "ready") is not None


def test_wait_for_event_works_in_every_event_loop() -> None:
    """One backend, used under two event loops (two asyncio.run calls in one process)."""
    backend = DurableBackend()
    assert asyncio.run(_wait_then_publish(backend, "first")) == "first"
    assert asyncio.run(_wait_then_publish(backend, "second")) == "second"


# --- a pause raised by a plain helper, and by an async def helper -------------------------------------
GATE = {"open": False}


def require_gate(event: str) -> None:
    if not GATE["open"]:
        raise PauseForEventException(event)


async def gated(order: str) -> str:
    await charge(1)
    EFFECTS["since last save"] += 1
    require_gate("gate")
    return f"{order} through"


async def require_approval(event: str) -> None:
    EFFECTS["asked"] += 1
    raise PauseForEventException(event)


async def approved_by_helper(order: str) -> str:
    await charge(2)
    await require_approval("approval")
    return f"{order} approved"


gated_p = make_durable(gated)
approved_by_helper_p = make_durable(approved_by_helper)


async def test_pause_raised_by_a_plain_helper_is_an_error_and_keeps_the_last_save(backend) -> None:
    GATE["open"] = False
    for _ in range(2):
        with pytest.raises(UnsupportedPauseError) as caught:
            await gated_p("g", orchestration_backend=backend, instance_id="g")
        assert caught.value.event == "gate"
        assert "require_gate" in str(caught.value)
    assert EFFECTS == {"charge 1": 1, "since last save": 2}  # the saved call is not repeated
    GATE["open"] = True
    assert await gated_p("g", orchestration_backend=backend, instance_id="g") == "g through"
    assert EFFECTS == {"charge 1": 1, "since last save": 3}
    assert await gated_p("g", orchestration_backend=backend, instance_id="g") == "g through"
    assert EFFECTS == {"charge 1": 1, "since last save": 3}


async def test_pause_raised_in_an_awaited_async_helper_is_a_pause(backend) -> None:
    pause = await paused(approved_by_helper_p("h", orchestration_backend=backend, instance_id="h"))
    assert pause.event == "approval"
    await paused(approved_by_helper_p("h", orchestration_backend=backend, instance_id="h"))
    backend.publish_event("h", "approval")
    assert await approved_by_helper_p("h", orchestration_backend=backend, instance_id="h") == (
        "h approved")
    assert EFFECTS == {"charge 2": 1, "asked": 1}
    assert await backend.take_event("h", "approval") is None


# --- consuming an event is atomic with the save that follows ----------------------------------------
class Crash(Exception):
    pass


class CrashOnSave(DurableBackend):
    """Dies (raises) right before or right after the save that records a consumed event."""

    def __init__(self, store: StateStore, when: str) -> None:
        super().__init__(store)
        self.when = when

    async def save_state(self, instance_id: str, state: dict[str, Any]) -> None:
        recording = bool(state["consumed_events"])
        if recording and self.when == "before":
            raise Crash
        await super().save_state(instance_id, state)
        if recording and self.when == "after":
            raise Crash


async def test_consumption_is_undone_by_a_crash_before_the_save_and_kept_after_it(backend) -> None:
    store = backend.state_store
    await paused(checkout_p(8, orchestration_backend=backend, instance_id="k"))
    backend.publish_event("k", "shipped")
    with pytest.raises(Crash):
        await checkout_p(8, orchestration_backend=CrashOnSave(store, "before"), instance_id="k")
    assert [name for _, name in await store.events("k")] == ["shipped"]  # still there
    with pytest.raises(Crash):
        await checkout_p(8, orchestration_backend=CrashOnSave(store, "after"), instance_id="k")
    assert await store.events("k") == []  # consumed together with that save
    assert await checkout_p(8, orchestration_backend=DurableBackend(store), instance_id="k") == (
        "paid 8, shipped")
    assert EFFECTS == {"begin": 1, "charge 8": 1, "after shipped": 2}
