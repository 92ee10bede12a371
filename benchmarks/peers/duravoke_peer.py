"""duravoke: each decorated call's result is recorded; running the root call again replays the
recorded results (re-executing the root function), so recovery grows with history. It has no
events and no worker."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from duravoke import Duravoke, InMemoryKKV, JSONSerializer, PersistedKKV

from .base import Peer, Unsupported, start_clock

CRASH_AT = -1
WATCH = -1
watched_at = 0.0
ran: list[int] = []


async def trivial(instance: str, i: int) -> int:
    global watched_at
    if i == WATCH:
        watched_at = time.perf_counter()
    if i == CRASH_AT:
        os._exit(0)
    if WATCH >= 0:  # recovering: which steps run again
        ran.append(i)
    return i


def programs(kv: Any) -> tuple[Any, Any]:
    """The root programs bound to one store (duravoke's decorator needs its Duravoke)."""
    dv = Duravoke(kv, JSONSerializer())
    step = dv.duravoke(trivial)

    async def steps(instance: str, n: int) -> int:
        total = 0
        for i in range(n):
            total += await step(instance, i)
        return total

    async def holding(instance: str, m: int, n: int) -> int:
        data = list(range(m))
        total = 0
        for i in range(n):
            total += await step(instance, i)
        return total + len(data)

    return dv.duravoke(steps), dv.duravoke(holding)


def check(what: str, got: Any, wanted: Any) -> None:
    if got != wanted:
        raise AssertionError(f"{what}: got {got!r}, wanted {wanted!r}")


def total(n: int) -> int:
    return n * (n - 1) // 2


class DuravokeBase(Peer):
    label = "duravoke"

    def kv(self) -> Any:
        raise NotImplementedError

    def steps(self, n: int) -> float:
        steps, _ = programs(self.kv())

        async def run() -> float:
            await steps("warm-up", 3)
            start = start_clock()
            check("steps", await steps("steps", n), total(n))
            return time.perf_counter() - start
        return asyncio.run(run())

    def holding(self, m: int, n: int) -> float:
        steps, holding = programs(self.kv())

        async def run() -> float:
            await steps("warm-up", 3)
            start = start_clock()
            check("holding", await holding("holding", m, n), total(n) + m)
            return (time.perf_counter() - start) / n
        return asyncio.run(run())

    def throughput(self, instances: int, n: int) -> float:
        steps, _ = programs(self.kv())

        async def run() -> float:
            await steps("warm-up", 3)
            start = start_clock()
            results = await asyncio.gather(*(steps(f"t{index}", n) for index in range(instances)))
            elapsed = time.perf_counter() - start
            check("throughput", results, [total(n)] * instances)
            return instances * n / elapsed
        return asyncio.run(run())

    def serve(self, count: int, marks: Path) -> None:
        raise Unsupported("duravoke has no events")


class DuravokeMemory(DuravokeBase):
    store = "InMemoryKKV"
    durability = "memory"

    def kv(self) -> Any:
        return InMemoryKKV()

    def prepare(self, k: int) -> None:
        raise Unsupported("in-memory store: nothing survives the process")


class DuravokeFile(DuravokeBase):
    store = "PersistedKKV (one JSON file)"
    durability = "no fsync (rewrites the whole file per call)"

    def kv(self) -> Any:
        return PersistedKKV(str(self.directory / "duravoke.json"))

    def prepare(self, k: int) -> None:
        global CRASH_AT
        CRASH_AT = k
        steps, _ = programs(self.kv())
        asyncio.run(steps("recover", k + 1))
        raise AssertionError("the crash step did not crash")

    def recover(self, k: int) -> float:
        """Re-running the root call replays the ``k`` recorded results, then runs step k+1."""
        global WATCH
        WATCH = k
        start = start_clock()
        steps, _ = programs(self.kv())
        check("recovered result", asyncio.run(steps("recover", k + 1)), total(k + 1))
        check("steps run after recovery", ran, [k])
        return watched_at - start
