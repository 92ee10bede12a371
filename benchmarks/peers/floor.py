"""The floors every system is measured against: plain Python (no durability at all), and the
disk's own (one fsync'd write per step: no step durable on this disk can cost less)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from pathlib import Path

from .base import Peer, Unsupported, start_clock

RECORD = os.urandom(256)  # about what a small step's checkpoint writes


async def trivial(i: int) -> int:
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


class PlainPython(Peer):
    label = "plain Python"
    store = "none"
    durability = "none: the floor of the code itself"

    def steps(self, n: int) -> float:
        return asyncio.run(timed(steps(n)))

    def holding(self, m: int, n: int) -> float:
        return asyncio.run(timed(holding(m, n))) / n

    def throughput(self, instances: int, n: int) -> float:
        async def run() -> None:
            await asyncio.gather(*(steps(n) for _ in range(instances)))
        return instances * n / asyncio.run(timed(run()))

    def prepare(self, k: int) -> None:
        raise Unsupported("plain Python keeps nothing across processes")

    def serve(self, count: int, marks: Path) -> None:
        raise Unsupported("plain Python has no events across processes")


async def timed(work: Awaitable[object]) -> float:
    """Seconds the awaited work takes, the event loop already running and warm (as the
    others)."""
    await steps(3)
    start = start_clock()
    await work
    return time.perf_counter() - start


class FsyncFloor(Peer):
    label = "fsync floor"
    store = "a file"
    durability = "one 256-byte write + fsync per step"

    def steps(self, n: int) -> float:
        fd = os.open(self.directory / "floor", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            start = start_clock()
            for _ in range(n):
                os.write(fd, RECORD)
                os.fsync(fd)
            return time.perf_counter() - start
        finally:
            os.close(fd)

    def holding(self, m: int, n: int) -> float:
        return self.steps(n) / n  # what the program holds is not the disk's business

    def throughput(self, instances: int, n: int) -> float:
        return n / self.steps(n)  # one unbatched stream; group commit can beat it

    def prepare(self, k: int) -> None:
        raise Unsupported("a floor of writes, not of recovery")

    def serve(self, count: int, marks: Path) -> None:
        raise Unsupported("a floor of writes, not of events")
