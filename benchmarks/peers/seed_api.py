"""The workloads written against the seed's API (``make_durable``, ``DurableBackend``), which
durable and durable-python 0.1.1 both offer: one program text measures both.

``import durable`` here is whichever the child's path finds first: ours, or durable-python's
when its install is put in front (see ``peers.SEED_PATH``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from durable import DurableBackend, make_durable

from .base import start_clock

CRASH_AT = -1  # the step whose start kills the process (prepare)
WATCH = -1  # the step whose start is timed (recover)
watched_at = 0.0
ran: list[int] = []  # steps begun in this process, when ``recording``
recording = False


async def trivial(i: int) -> int:
    global watched_at
    if i == WATCH:
        watched_at = time.perf_counter()
    if i == CRASH_AT:
        os._exit(0)  # dies as a crash would: nothing after the last save survives
    if recording:
        ran.append(i)
    return i


async def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await trivial(i)
    return total


async def holding(m: int, n: int) -> int:
    data = list(range(m))
    total = 0
    for i in range(n):
        total += await trivial(i)
    return total + len(data)


steps_program = make_durable(steps)
holding_program = make_durable(holding)


def expected_steps(n: int) -> int:
    return n * (n - 1) // 2


class Rerun(AssertionError):
    """Completed steps ran again after a crash: the system restarted instead of resuming."""


class NotCheckpointed(AssertionError):
    """Fewer saves than steps: the steps were not made durable one by one."""


class CountingBackend(DurableBackend):
    """Counts saves, so a run proves each of its steps was checkpointed."""

    saves = 0

    async def save_state(self, instance_id: str, state: Any) -> None:
        self.saves += 1
        await super().save_state(instance_id, state)


def checkpointed(backend: CountingBackend, steps: int) -> None:
    if backend.saves < steps:
        saves = f"{backend.saves} save{'s' if backend.saves != 1 else ''}"
        raise NotCheckpointed(f"{saves} for {steps} steps: its steps are not "
                              "checkpointed one by one (it saves when it pauses and ends)")


def check(what: str, got: Any, wanted: Any) -> None:
    if got != wanted:
        raise AssertionError(f"{what}: got {got!r}, wanted {wanted!r}")


async def warm_up(backend: Any) -> None:
    """One small untimed instance first, on the same store and loop: what is measured next is
    a process at work, not one starting (connections, caches, lazy imports)."""
    await steps_program(3, orchestration_backend=backend, instance_id="warm-up")


async def run_steps(store: Any, n: int) -> float:
    backend = CountingBackend(store)
    await warm_up(backend)
    backend.saves = 0
    start = start_clock()
    result = await steps_program(n, orchestration_backend=backend, instance_id="steps")
    elapsed = time.perf_counter() - start
    check("steps", result, expected_steps(n))
    checkpointed(backend, n)
    return elapsed


async def run_holding(store: Any, m: int, n: int) -> float:
    backend = CountingBackend(store)
    await warm_up(backend)
    backend.saves = 0
    start = start_clock()
    result = await holding_program(m, n, orchestration_backend=backend, instance_id="holding")
    elapsed = time.perf_counter() - start
    check("holding", result, expected_steps(n) + m)
    checkpointed(backend, n)
    return elapsed / n


async def crash_after(store: Any, k: int) -> None:
    """Run ``k`` steps, then die at the start of the next one (never returns)."""
    global CRASH_AT
    CRASH_AT = k
    await steps_program(k + 1, orchestration_backend=DurableBackend(store), instance_id="recover")
    raise AssertionError("the crash step did not crash")


async def resume(open_store: Any, k: int) -> float:
    """From before the store opens to the start of step ``k + 1``; checks that none of the
    ``k`` completed steps ran again."""
    global WATCH, recording
    WATCH, recording = k, True
    start = start_clock()
    store = open_store()
    result = await steps_program(k + 1, orchestration_backend=DurableBackend(store),
                                 instance_id="recover")
    check("recovered result", result, expected_steps(k + 1))
    if ran != [k]:
        raise Rerun(f"after the crash it ran {len(ran) - 1} of the {k} completed steps again")
    return watched_at - start


async def run_concurrently(store: Any, instances: int, n: int) -> float:
    """Steps per second of ``instances`` instances of ``n`` steps, gathered on one loop."""
    backend = CountingBackend(store)
    await warm_up(backend)
    backend.saves = 0
    start = start_clock()
    results = await asyncio.gather(*(
        steps_program(n, orchestration_backend=backend, instance_id=f"t{index}")
        for index in range(instances)))
    elapsed = time.perf_counter() - start
    check("throughput", results, [expected_steps(n)] * instances)
    checkpointed(backend, instances * n)
    return instances * n / elapsed
