"""durable-python 0.1.1, the design this project started from, on its two stores.

Its child process puts its install in front of the path (``peers.SEED_PATH``), so
``seed_api`` runs the very same program text on it. It has no worker and keeps events in
memory, so nothing can reach a paused instance from another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import durable
from durable import DiskStateStore, InMemoryStateStore

from . import seed_api
from .base import Peer, Unsupported

if getattr(durable, "__version__", "") != "0.1.0":  # what 0.1.1 says of itself
    raise ImportError(f"durable-python 0.1.1 is not first on the path (found {durable.__file__})")


def durable_steps(run: Coroutine[Any, Any, float]) -> float:
    """A measurement of steps that are durable, or why there is none: it runs awaited calls
    inline and saves at pauses and at the end, so its steps cost what plain calls cost."""
    try:
        return asyncio.run(run)
    except seed_api.NotCheckpointed as error:
        raise Unsupported(str(error)) from None


class Seed(Peer):
    label = "durable-python 0.1.1"

    def open(self) -> object:
        raise NotImplementedError

    def steps(self, n: int) -> float:
        return durable_steps(seed_api.run_steps(self.open(), n))

    def holding(self, m: int, n: int) -> float:
        return durable_steps(seed_api.run_holding(self.open(), m, n))

    def throughput(self, instances: int, steps: int) -> float:
        return durable_steps(seed_api.run_concurrently(self.open(), instances, steps))

    def serve(self, count: int, marks: Path) -> None:
        raise Unsupported("its events live in one process's memory: no other process can "
                          "publish one")


class SeedMemory(Seed):
    store = "memory"
    durability = "memory"

    def prepare(self, k: int) -> None:
        raise Unsupported("in-memory store: nothing survives the process")

    def open(self) -> object:
        if not hasattr(self, "memory"):
            self.memory = InMemoryStateStore()
        return self.memory


class SeedDisk(Seed):
    store = "Disk (a file per instance)"
    durability = "no fsync (plain file writes)"

    def open(self) -> object:
        return DiskStateStore(str(self.directory / "states"))

    def prepare(self, k: int) -> None:
        asyncio.run(seed_api.crash_after(self.open(), k))

    def recover(self, k: int) -> float:
        try:
            return asyncio.run(seed_api.resume(self.open, k))
        except seed_api.Rerun as rerun:  # it saves only when it pauses
            raise Unsupported(f"does not resume where it stopped: {rerun}") from None
