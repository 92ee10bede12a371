"""Events with payloads and timeouts, durable timers and steps with retries.

Each test drives an instance seed-style (the caller runs it again after every
pause) on a ``VirtualClock``, with a fresh ``DurableBackend`` per run, the way
a new process continues an instance; the worker tests at the end let a
``Worker`` wake instances by itself.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import created, run_both
from hypothesis import given
from hypothesis import strategies as st

from durable import (
    Client,
    DurableBackend,
    EventTimeout,
    InMemoryStateStore,
    NotInDurableCode,
    PauseForEventException,
    RetryPolicy,
    SerializationError,
    SqliteStateStore,
    StepInterrupted,
    Worker,
    make_durable,
    sleep,
    sleep_until,
    step,
    wait_for_event,
)
from durable.clock import as_datetime, timer_time
from durable.testing import VirtualClock

CALLS: list[Any] = []
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()
    CRASHES[0] = 0


class Driver:
    """Runs one instance seed-style: each ``run`` is a new backend over the same store."""

    def __init__(self, program, *args: Any, store=None) -> None:
        self.program = make_durable(program)
        self.args = args
        self.store = store if store is not None else InMemoryStateStore()
        self.clock = VirtualClock(T0)
        self.pauses: list[PauseForEventException] = []

    def backend(self) -> DurableBackend:
        return DurableBackend(self.store, clock=self.clock)

    async def run(self) -> Any:
        """The result, or None after a pause (kept in ``pauses``)."""
        try:
            return await self.program(*self.args, orchestration_backend=self.backend(),
                                      instance_id="i")
        except PauseForEventException as pause:
            self.pauses.append(pause)
            return None

    def publish(self, name: str, payload: Any = None) -> None:
        self.backend().publish_event("i", name, payload)

    async def start(self) -> None:
        """Create the instance without running it, so events can be published before it runs."""
        await created(self.program, self.backend(), "i", *self.args)

    async def state(self) -> dict[str, Any]:
        return await self.store.load("i")


# --- events -------------------------------------------------------------------------------------
async def two_approvals() -> list[Any]:
    first = await wait_for_event("approve")
    second = await wait_for_event("approve")
    other = await wait_for_event("note")
    return [first, second, other]


async def test_payloads_arrive_in_order_and_buffered_events_are_kept() -> None:
    driver = Driver(two_approvals)
    await driver.start()
    driver.publish("approve", {"by": "ada"})  # before the instance even ran
    driver.publish("approve", ["second"])
    assert await driver.run() is None
    assert driver.pauses[-1].event == "note" and driver.pauses[-1].until is None
    driver.publish("note")  # no payload: the wait returns None
    assert await driver.run() == [{"by": "ada"}, ["second"], None]


async def test_resuming_before_the_event_pauses_again_without_saving() -> None:
    driver = Driver(two_approvals)
    await driver.run()
    saves = (await driver.state())["saves"]
    assert await driver.run() is None
    assert (await driver.state())["saves"] == saves
    assert [p.event for p in driver.pauses] == ["approve", "approve"]


async def approval_with_timeout() -> str:
    try:
        decision = await wait_for_event("decision", timeout=timedelta(hours=24))
    except EventTimeout as error:
        CALLS.append(str(error))
        decision = "escalated"
    fallback = await wait_for_event("second", timeout=60, default="no answer")
    return f"{decision}/{fallback}"


async def test_a_timeout_raises_event_timeout_in_the_program_and_a_default_is_returned() -> None:
    driver = Driver(approval_with_timeout)
    await driver.run()
    pause = driver.pauses[-1]
    assert pause.event == "decision" and pause.until == T0 + timedelta(hours=24)
    assert "until 2026-01-02T00:00:00+00:00" in str(pause)
    driver.clock.advance(timedelta(hours=24).total_seconds() - 1)
    assert await driver.run() is None  # one second early: never before its time
    driver.clock.advance(1)
    assert await driver.run() is None
    assert CALLS == ["event 'decision' did not arrive within 86400 s"]
    assert driver.pauses[-1].until == T0 + timedelta(hours=24, seconds=60)
    driver.clock.advance(60)
    assert await driver.run() == "escalated/no answer"


async def test_an_event_before_the_timeout_wins_and_the_deadline_survives_restarts() -> None:
    driver = Driver(approval_with_timeout)
    await driver.run()
    driver.clock.advance(3600)
    await driver.run()  # a restart an hour in: the deadline stays 24 h after the start
    assert driver.pauses[-1].until == T0 + timedelta(hours=24)
    driver.publish("decision", "approved")
    await driver.run()
    driver.publish("second", "ok")
    assert await driver.run() == "approved/ok"
    assert CALLS == []


async def wait_in_a_loop(names: list[str]) -> list[Any]:
    got = []
    for name in names:
        try:
            got.append(await wait_for_event(name, timeout=10))
        except EventTimeout:
            got.append(None)
        finally:
            CALLS.append(name)
    return got


async def test_waits_in_loops_and_finally_blocks() -> None:
    driver = Driver(wait_in_a_loop, ["a", "b", "c"])
    await driver.start()
    driver.publish("c", 3)
    driver.publish("a", 1)
    await driver.run()
    assert driver.pauses[-1].event == "b"
    driver.clock.advance(10)
    assert await driver.run() == [1, None, 3]
    assert CALLS == ["a", "b", "c"]


# --- timers -------------------------------------------------------------------------------------
async def nap(seconds: float) -> str:
    CALLS.append("before")
    await sleep(seconds)
    CALLS.append("between")
    await sleep_until(T0 + timedelta(days=2))
    await sleep_until(T0)  # in the past: at once
    return "awake"


async def test_sleep_pauses_until_its_time_and_never_fires_early() -> None:
    driver = Driver(nap, 90)
    await driver.run()
    pause = driver.pauses[-1]
    assert (pause.event, pause.until) == (None, T0 + timedelta(seconds=90))
    assert (await driver.state())["wake_at"] == (T0 + timedelta(seconds=90)).timestamp()
    driver.clock.advance(89.999)
    assert await driver.run() is None
    assert CALLS == ["before"]
    driver.clock.advance(0.001)
    assert await driver.run() is None
    assert driver.pauses[-1].until == T0 + timedelta(days=2)
    driver.clock.set(T0 + timedelta(days=3))
    assert await driver.run() == "awake"
    assert CALLS == ["before", "between"]


@pytest.mark.parametrize("bad, error", [
    (lambda: sleep(-1), ValueError), (lambda: sleep("1"), TypeError),
    (lambda: sleep(float("nan")), ValueError), (lambda: sleep_until(datetime(2026, 1, 1)), ValueError),
    (lambda: sleep_until(5), TypeError), (lambda: wait_for_event(""), TypeError),
    (lambda: wait_for_event("x", timeout=-5), ValueError),
])
def test_bad_arguments_are_refused_where_they_are_given(bad, error) -> None:
    with pytest.raises(error):
        bad()


async def test_primitives_awaited_outside_durable_code_say_so() -> None:
    for primitive in (sleep(1), wait_for_event("x"), step(len, "abc")):
        with pytest.raises(NotInDurableCode, match="awaited outside durable code"):
            await primitive

    async def plain_helper():
        await sleep(1)

    async def durable_caller():
        await asyncio.ensure_future(plain_helper())  # a task: not durable code

    with pytest.raises(NotInDurableCode, match=r"sleep\(\) was awaited"):
        await make_durable(durable_caller)(orchestration_backend=DurableBackend())


# --- steps --------------------------------------------------------------------------------------
class Flaky:
    """Fails ``failures`` times, then returns; every attempt is recorded in CALLS."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error

    def __call__(self, value: int) -> int:
        CALLS.append(("attempt", value))
        if len([c for c in CALLS if c[0] == "attempt"]) <= self.failures:
            raise self.error(f"attempt {len(CALLS)} failed")
        return value * 2


FLAKY = {"twice": Flaky(2), "always": Flaky(99), "fatal": Flaky(1, KeyError)}
POLICY = RetryPolicy(max_attempts=4, initial_delay=1, backoff=3, max_delay=5,
                     never_retry_on=(KeyError,))


def flaky(kind: str, value: int) -> int:
    return FLAKY[kind](value)


async def charge(kind: str) -> int:
    total = await step(flaky, kind, 21, retry=POLICY, name="charge")
    CALLS.append(("after", total))
    return total


async def run_retries(driver: Driver) -> Any:
    """Run to the end, moving the clock to every retry's time; the waits seen."""
    waits = []
    while True:
        result = await driver.run()
        if not driver.pauses or driver.pauses[-1].until is None:
            return result, waits
        pause = driver.pauses.pop()
        waits.append((pause.until - datetime.fromtimestamp(driver.clock.time(), UTC)).total_seconds())
        driver.clock.set(pause.until)


async def test_a_step_retries_with_backoff_on_durable_timers() -> None:
    driver = Driver(charge, "twice")
    result, waits = await run_retries(driver)
    assert result == 42
    assert waits == [1.0, 3.0]  # after attempts 1 and 2: initial_delay, then * backoff
    assert CALLS == [("attempt", 21)] * 3 + [("after", 42)]


async def test_retries_stop_at_max_attempts_and_raise_the_last_error() -> None:
    driver = Driver(charge, "always")
    with pytest.raises(ConnectionError) as raised:
        await run_retries(driver)
    assert CALLS == [("attempt", 21)] * 4
    assert "step 'charge' failed at attempt 4 of 4" in raised.value.__notes__[0]


def test_retry_delays_grow_to_the_maximum_and_jitter_stays_within_its_spread() -> None:
    assert [POLICY.delay(n) for n in range(1, 5)] == [1, 3, 5, 5]
    jittery = RetryPolicy(initial_delay=10, jitter=0.2)
    assert all(8 <= jittery.delay(1) <= 12 for _ in range(200))
    assert len({jittery.delay(1) for _ in range(20)}) > 1


async def test_errors_that_never_retry_are_raised_at_once() -> None:
    with pytest.raises(KeyError):
        await run_retries(Driver(charge, "fatal"))
    assert CALLS == [("attempt", 21)]


@pytest.mark.parametrize("kwargs, error", [
    ({"max_attempts": 0}, ValueError), ({"backoff": 0.5}, ValueError), ({"jitter": 2}, ValueError),
    ({"initial_delay": -1}, ValueError), ({"retry_on": (int,)}, TypeError),
])
def test_bad_retry_policies_are_refused(kwargs, error) -> None:
    with pytest.raises(error):
        RetryPolicy(**kwargs)


async def fetch(key: str) -> str:
    CALLS.append(("fetch", key))
    await asyncio.sleep(0)
    return key.upper()


@step(name="notify")
async def notify(who: str) -> str:
    CALLS.append(("notify", who))
    return f"told {who}"


async def steps_then_pause() -> list[str]:
    got = [await step(fetch, "a"), await notify("ada")]
    await wait_for_event("go")
    got.append(await step(fetch, key="b"))
    return got


async def test_a_finished_step_is_checkpointed_and_never_runs_again() -> None:
    driver = Driver(steps_then_pause)
    await driver.run()
    await driver.run()
    driver.publish("go")
    assert await driver.run() == ["A", "told ada", "B"]
    assert CALLS == [("fetch", "a"), ("notify", "ada"), ("fetch", "b")]


class Crash(BaseException):
    """Stands for the process dying: nothing after it is saved (like os._exit)."""


CRASHES = [0]  # how many of the next attempts die


def dies_while_crashes_remain() -> str:
    CALLS.append("attempt")
    if CRASHES[0] > 0:
        CRASHES[0] -= 1
        raise Crash
    return "done"


async def at_most_once() -> str:
    try:
        return await step(dies_while_crashes_remain, at_most_once=True, name="wire money")
    except StepInterrupted as error:
        return f"interrupted: {error.step} attempt {error.attempt}"


async def counted_retries() -> str:
    return await step(dies_while_crashes_remain,
                      retry=RetryPolicy(max_attempts=2, initial_delay=0))


async def test_an_interrupted_at_most_once_step_is_never_run_again() -> None:
    CRASHES[0] = 1
    driver = Driver(at_most_once)
    with pytest.raises(Crash):
        await driver.run()
    assert await driver.run() == "interrupted: wire money attempt 1"
    assert CALLS == ["attempt"]


async def test_an_interrupted_attempt_counts_against_max_attempts() -> None:
    CRASHES[0] = 1
    driver = Driver(counted_retries)
    with pytest.raises(Crash):
        await driver.run()
    assert await run_retries(driver) == ("done", [0.0])  # attempt 2 of 2, after the delay
    assert CALLS == ["attempt", "attempt"]


async def test_a_crash_in_the_last_attempt_raises_step_interrupted() -> None:
    CRASHES[0] = 2
    driver = Driver(counted_retries)
    for _ in range(2):
        with pytest.raises(Crash):
            await run_retries(driver)
    with pytest.raises(StepInterrupted, match="during attempt 2"):
        await run_retries(driver)
    assert CALLS == ["attempt", "attempt"]


async def unsaveable_step() -> None:
    await step(id, threading.Lock(), at_most_once=True)


async def test_a_step_whose_arguments_cannot_be_saved_names_the_step() -> None:
    with pytest.raises(SerializationError, match=r"what it awaits \(step 'id'.* is a StepRun"):
        await Driver(unsaveable_step).run()


# --- workers ------------------------------------------------------------------------------------
async def day_long_approval(order: str) -> str:
    try:
        answer = await wait_for_event("approval", timeout=timedelta(hours=24))
    except EventTimeout:
        answer = "timed out"
    await sleep(timedelta(minutes=5))
    return f"{order}: {answer}"


approval_program = make_durable(day_long_approval)


async def test_a_worker_wakes_timers_and_timeouts_on_a_virtual_clock(tmp_path) -> None:
    clock = VirtualClock(T0)
    store = SqliteStateStore(tmp_path / "timers.db")
    client = Client(store)
    worker = Worker(store, [approval_program], clock=clock, poll_interval=60)
    running = asyncio.create_task(worker.run())
    try:
        fast = await client.start(approval_program, "fast", instance_id="fast")
        slow = await client.start(approval_program, "slow", instance_id="slow")
        info = await slow.wait_for_status("waiting", timeout=30)
        await fast.wait_for_status("waiting", timeout=30)
        assert info.waiting_for == "approval" and info.wake_at == (T0 + timedelta(days=1)).timestamp()
        await fast.publish_event("approval", "yes")
        info = await client.wait_for_status("fast", "waiting", timeout=30)
        while info.waiting_for is not None:  # until it has moved on to its sleep
            await asyncio.sleep(0.01)
            info = await fast.status()
        clock.advance(timedelta(minutes=5).total_seconds())
        assert await fast.result(timeout=30) == "fast: yes"
        clock.advance(timedelta(hours=24).total_seconds())
        info = await slow.status()
        while info.waiting_for is not None:
            await asyncio.sleep(0.01)
            info = await slow.status()
        assert info.status == "waiting"  # now in its five-minute sleep
        clock.advance(timedelta(minutes=5).total_seconds())
        assert await slow.result(timeout=30) == "slow: timed out"
    finally:
        worker.stop()
        await running
        await store.close()


async def test_a_worker_wakes_a_real_timer_without_waiting_for_its_poll(tmp_path) -> None:
    store = SqliteStateStore(tmp_path / "real.db")
    program = make_durable(short_nap)
    worker = Worker(store, [program], poll_interval=3600)  # only the timer can wake it in time
    running = asyncio.create_task(worker.run())
    try:
        handle = await Client(store).start(program, instance_id="nap")
        assert await handle.result(timeout=30) == "rested"
    finally:
        worker.stop()
        await running
        await store.close()


async def short_nap() -> str:
    await sleep(0.2)
    return "rested"


# --- differential: the same program with plain stand-ins ----------------------------------------
SHIMS = """
import inspect
import durable
if DURABLE:
    from durable import RetryPolicy, gather, sleep, step, wait_for_event
else:
    from durable import RetryPolicy
    gather = asyncio.gather

    async def step(fn, *args, retry=None, name=None, at_most_once=False, **kwargs):
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def sleep(seconds):
        await asyncio.sleep(0)

    async def wait_for_event(name, timeout=None, default=None):
        return None  # what the harness publishes: no payload
"""

DIFFERENTIAL = {
    "steps, timers and events in loops and finally": """
        def effect(x):
            log("effect", x)
            return x * 3

        async def helper(x):
            value = await step(effect, x)
            await sleep(5)
            return value + 1

        async def main():
            total = 0
            for i in range(3):
                try:
                    total += await helper(i)
                    got = await wait_for_event(f"go{i}", timeout=60)
                    log("got", i, got)
                finally:
                    log("finally", i)
                    await sleep(1)
            return total
    """,
    "a failing step caught, in a gather of branches": """
        def boom(x):  # logs nothing: a sync step runs in a thread, and the run is cut after
            raise KeyError(x)  # each save, so a branch's step may be cut mid-way and run again

        async def guarded(x):
            try:
                return await step(boom, x)
            except KeyError as error:
                log("caught", x)
                return f"caught {error}"

        async def main():
            results = await gather(guarded(1), guarded(2))
            await sleep(3)
            return results
    """,
}


@pytest.mark.parametrize("name", sorted(DIFFERENTIAL))
async def test_primitives_give_what_their_plain_stand_ins_give(name, tmp_path) -> None:
    source = SHIMS + textwrap.dedent(DIFFERENTIAL[name])
    (expected, plain_trace), (result, trace, runs) = await run_both(source, tmp_path)
    assert result == expected
    if "gather" in name:  # branches interleave their effects in some order
        trace, plain_trace = sorted(map(repr, trace)), sorted(map(repr, plain_trace))
    assert trace == plain_trace
    assert runs > 3  # restarted after every save, and woken for every pause


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_timer_times_survive_the_trip_through_a_datetime(seconds: float) -> None:
    wake_at = timer_time(seconds)
    assert seconds <= wake_at < seconds + 2e-6  # never early, at most a microsecond late
    assert VirtualClock(as_datetime(wake_at)).time() == wake_at  # clock.set(pause.until) fires it
