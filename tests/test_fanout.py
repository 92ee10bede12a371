"""gather, first and map: branches inside one instance, saved with it.

The differential cases run each program with ``asyncio.gather`` plainly and
with ``durable.gather`` durably, restarted after every save, and compare the
outcome; the rest check what only durable fan-outs have: a branch's pause
does not block the others, finished branches never run again, concurrency
limits, cancellation and the saved shape of the state.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import created, load_module, run_both, run_durable

from durable import (
    SKIPPED,
    DurableBackend,
    InMemoryStateStore,
    PauseForEventException,
    SqliteStateStore,
    first,
    gather,
    make_durable,
    map,
    sleep,
    step,
    wait_for_event,
)
from durable.errors import CANCEL_EVENT
from durable.testing import VirtualClock

FANOUT = """
import durable
gather = durable.gather if DURABLE else asyncio.gather
"""

CASES = {
    "results in argument order": """
        async def branch(name, n):
            total = 0
            for i in range(n):
                total += await nd(i)
                log(name, i)
            return name, total

        async def main():
            return await gather(branch("a", 3), branch("b", 1), branch("c", 2))
    """,
    "nested gathers and durable calls inside branches": """
        async def leaf(x):
            await nd(x)
            return x * x

        async def inner(x):
            a, b = await gather(leaf(x), leaf(x + 1))
            return a + b + await leaf(x + 2)

        async def main():
            parts = await gather(inner(1), inner(10), leaf(3))
            return sum(parts), parts
    """,
    "the first error is raised": """
        async def ok(x):
            await nd(x)
            return x

        async def bad(x):
            await nd(x)
            raise ValueError(f"bad {x}")

        async def main():
            try:
                await gather(ok(1), bad(2), ok(3))
            except ValueError as error:
                return "caught", str(error)
    """,
    "errors returned with return_exceptions": """
        async def maybe(x):
            await nd(x)
            if x % 2:
                raise KeyError(x)
            return x

        async def main():
            results = await gather(*[maybe(x) for x in range(5)], return_exceptions=True)
            return [repr(r) for r in results]
    """,
    "a gather in a loop, in try/finally, with shared state": """
        async def add(box, x):
            await nd(x)
            box.append(x)
            return len(box)

        async def main():
            box = []
            sizes = []
            for round in range(3):
                try:
                    sizes.append(sorted(await gather(add(box, round), add(box, round * 10))))
                finally:
                    log("round", round)
            return sorted(box), sizes
    """,
    "no calls at all": """
        async def main():
            return await gather()
    """,
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_gather_gives_what_asyncio_gather_gives(name, tmp_path) -> None:
    source = FANOUT + textwrap.dedent(CASES[name])
    (expected, plain_trace), (result, trace, runs) = await run_both(source, tmp_path)
    assert result == expected
    assert Counter(trace) == Counter(plain_trace) or set(trace) == set(plain_trace)
    uninterrupted, trace, _ = await run_durable(load_module(source, tmp_path, durable=True), "main",
                                                (), crash=lambda n: False)
    assert uninterrupted == expected
    assert Counter(trace) == Counter(plain_trace)  # without restarts, every effect once
    assert runs > 1 or name == "no calls at all"


LOG: list[Any] = []


@pytest.fixture(autouse=True)
def _fresh_log():
    LOG.clear()


async def approve(order: str) -> str:
    LOG.append(("waits", order))
    answer = await wait_for_event(f"approve-{order}")
    LOG.append(("approved", order))
    return f"{order}: {answer}"


async def quick(order: str) -> str:
    LOG.append(("quick", order))
    return order


async def orders() -> list[str]:
    return await gather(approve("a"), quick("b"), approve("c"), quick("d"))


async def run_seed_style(program, store, clock=None) -> Any:
    try:
        return await make_durable(program)(orchestration_backend=DurableBackend(store, clock=clock),
                                           instance_id="fan")
    except PauseForEventException as pause:
        return pause


async def test_a_waiting_branch_does_not_block_the_others_and_each_runs_once(tmp_path) -> None:
    store = SqliteStateStore(tmp_path / "fan.db")
    try:
        pause = await run_seed_style(orders, store)
        assert isinstance(pause, PauseForEventException)
        assert sorted(LOG) == [("quick", "b"), ("quick", "d"), ("waits", "a"), ("waits", "c")]
        info = await store.info("fan")
        assert info.status == "waiting" and info.waiting_for in ("approve-a", "approve-c")
        # Either event wakes the instance (or a cancellation): all are recorded as waited for.
        assert set((await store.load("fan"))["waiting_events"]) == {
            "approve-a", "approve-c", CANCEL_EVENT}
        DurableBackend(store).publish_event("fan", "approve-c", "yes")
        assert isinstance(await run_seed_style(orders, store), PauseForEventException)
        DurableBackend(store).publish_event("fan", "approve-a", "ok")
        assert await run_seed_style(orders, store) == ["a: ok", "b", "c: yes", "d"]
        assert Counter(LOG) == Counter({("quick", "b"): 1, ("quick", "d"): 1, ("waits", "a"): 1,
                                        ("waits", "c"): 1, ("approved", "a"): 1,
                                        ("approved", "c"): 1})
        assert (await store.load("fan"))["fibers"] is None  # ended: no branches left
    finally:
        await store.close()


async def slow_step(x: int) -> int:
    LOG.append(("start", x))
    await asyncio.sleep(0.01)
    LOG.append(("end", x))
    return x * 2


ACTIVE = [0, 0]  # now, most


async def counted(x: int) -> int:
    ACTIVE[0] += 1
    ACTIVE[1] = max(ACTIVE)
    await asyncio.sleep(0.001)
    ACTIVE[0] -= 1
    return x + 1


async def bounded_map() -> list[int]:
    return await map(counted, range(20), concurrency=3)


async def test_map_keeps_input_order_and_its_concurrency_limit() -> None:
    ACTIVE[:] = [0, 0]
    assert await run_seed_style(bounded_map, InMemoryStateStore()) == list(range(1, 21))
    assert ACTIVE[1] == 3


async def test_branches_run_concurrently() -> None:
    async def fan() -> list[int]:
        return await gather(*[slow_step(x) for x in range(5)])
    assert await run_seed_style(fan, InMemoryStateStore()) == [0, 2, 4, 6, 8]
    assert [entry[0] for entry in LOG[:5]] == ["start"] * 5  # all started before any ended


async def fails_on_odd(x: int) -> int:
    await asyncio.sleep(0)
    if x % 2:
        raise ValueError(x)
    return x


async def tolerant_map() -> list[Any]:
    results = await map(fails_on_odd, range(6), tolerated_failures=3)
    return [r if not isinstance(r, Exception) else f"error {r}" for r in results]


async def intolerant_map() -> list[Any]:
    return await map(fails_on_odd, range(6), concurrency=1, tolerated_failures=1)


async def enough_map() -> list[Any]:
    return await map(slow_step, range(10), concurrency=2, min_successful=3)


async def test_map_failure_tolerance_and_early_success() -> None:
    assert await run_seed_style(tolerant_map, InMemoryStateStore()) == [
        0, "error 1", 2, "error 3", 4, "error 5"]
    with pytest.raises(ValueError) as raised:
        await run_seed_style(intolerant_map, InMemoryStateStore())
    assert "map(): 2 of 6 items failed, 1 tolerated" in raised.value.__notes__
    results = await run_seed_style(enough_map, InMemoryStateStore())
    done = [r for r in results if r is not SKIPPED]
    assert 3 <= len(done) <= 4 and done == [2 * x for x in range(len(done))]  # two at a time
    assert results[len(done):] == [SKIPPED] * (10 - len(done))


@pytest.mark.parametrize("bad, error", [
    (lambda: map(counted, [1], concurrency=0), ValueError),
    (lambda: map(counted, [1], tolerated_failures=-1), ValueError),
    (lambda: map(42, [1]), TypeError), (lambda: first(), ValueError),
])
def test_bad_fanout_arguments(bad, error) -> None:
    with pytest.raises(error):
        bad()


async def library_branch() -> Any:
    return await gather(asyncio.sleep(0))


async def test_a_library_coroutine_as_a_branch_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match=r"gather\(\) argument 1 is a coroutine of sleep\(\)"):
        await run_seed_style(library_branch, InMemoryStateStore())


async def guarded(name: str, seconds: float) -> str:
    try:
        await sleep(seconds)
        return name
    except asyncio.CancelledError:
        LOG.append(("cancelled", name))
        raise
    finally:
        LOG.append(("finally", name))


async def race() -> Any:
    winner = await first(guarded("slow", 60), wait_for_event("go"), guarded("slower", 120))
    await step(LOG.append, ("after", winner))
    return winner


async def test_first_returns_the_first_to_finish_and_cancels_the_rest() -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = InMemoryStateStore()
    pause = await run_seed_style(race, store, clock)
    assert pause.event == "go" and pause.until == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    clock.advance(60)
    assert await run_seed_style(race, store, clock) == "slow"
    # The losers unwind (their except and finally blocks run) before first() returns.
    assert LOG == [("finally", "slow"), ("cancelled", "slower"), ("finally", "slower"),
                   ("after", "slow")]


async def primitives_as_branches() -> list[Any]:
    return await gather(wait_for_event("x"), sleep(5), step(len, "four"))


async def test_primitives_can_be_branches() -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = InMemoryStateStore()
    await created(make_durable(primitives_as_branches), DurableBackend(store), "fan")
    DurableBackend(store).publish_event("fan", "x", {"payload": 1})
    assert isinstance(await run_seed_style(primitives_as_branches, store, clock),
                      PauseForEventException)
    clock.advance(5)
    assert await run_seed_style(primitives_as_branches, store, clock) == [{"payload": 1}, None, 4]


class SlowRunningSaves(DurableBackend):
    """Saves of a running state take a while, the others none: a save asked for after another
    overtakes it unless the runtime orders them. Records what it wrote, in order."""

    def __init__(self) -> None:
        super().__init__(InMemoryStateStore())
        self.written: list[tuple[int, str]] = []

    async def save_state(self, instance_id: str, state: dict[str, Any]) -> None:
        if state["status"] == "running":
            await asyncio.sleep(0.005)
        self.written.append((state["saves"], state["status"]))
        await super().save_state(instance_id, state)


async def staggered(x: int) -> int:
    for _ in range(x % 4):
        await asyncio.sleep(0)  # branches end in different turns of the loop
    return x


async def map_then_more(n: int) -> int:
    results = await map(staggered, range(n), concurrency=5)
    return sum(results) + await quick_number(1)


async def quick_number(x: int) -> int:
    return x


@pytest.mark.parametrize("n", [7, 12, 30])
async def test_saves_after_a_fan_out_never_overtake_the_saves_of_its_branches(n) -> None:
    """When the last branches of a map end, their saves may still wait to be written while
    the main fiber goes on (back to one fiber), saves and finishes. Every save taken is
    written, in the order taken: the last is the finished state, never a branch's older one,
    which would bring a finished instance back to running (under a worker's lease it was
    refused instead: the worker logged a lease it had lost to itself)."""
    backend = SlowRunningSaves()
    program = make_durable(map_then_more)
    assert await program(n, orchestration_backend=backend, instance_id="m") == sum(range(n)) + 1
    await asyncio.sleep(0.1)  # a save left behind would land now
    numbers = [number for number, _ in backend.written]
    assert numbers == list(range(1, len(numbers) + 1)), backend.written  # all, in order
    assert backend.written[-1][1] == "completed"
    assert (await backend.load_state("m"))["status"] == "completed"
