"""durable on each of its stores. Steps, state size and recovery go through the seed API
(``seed_api``, the same program text durable-python runs); round trips and throughput through
a ``Worker`` and a ``Client``, as a deployment would run them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from durable import (
    Client,
    DiskStateStore,
    InMemoryStateStore,
    PostgresStateStore,  # imported here, not when first used: imports are not timed
    SqliteStateStore,
    StateStore,
    Worker,
    make_durable,
    wait_for_event,
)

from . import seed_api
from .base import READY, Peer, Unsupported, append_line, start_clock


async def pings(count: int, marks: str) -> int:
    append_line(Path(marks), READY)
    for i in range(count):
        await wait_for_event(f"e{i}")
        append_line(Path(marks), repr(time.time()))
    return count


pings_program = make_durable(pings)
PROGRAMS = [pings_program, seed_api.steps_program]
SERVED = "pings"  # the instance id of the round trip


class Durable(Peer):
    label = "durable"
    durability = "fsync per step"

    def open(self) -> StateStore:
        raise NotImplementedError

    def steps(self, n: int) -> float:
        return asyncio.run(seed_api.run_steps(self.open(), n))

    def holding(self, m: int, n: int) -> float:
        return asyncio.run(seed_api.run_holding(self.open(), m, n))

    def prepare(self, k: int) -> None:
        asyncio.run(seed_api.crash_after(self.open(), k))

    def recover(self, k: int) -> float:
        return asyncio.run(seed_api.resume(self.open, k))

    def serve(self, count: int, marks: Path) -> None:
        async def serve() -> None:
            store = self.open()
            worker = Worker(store, PROGRAMS)
            running = asyncio.create_task(worker.run())
            client = Client(store)
            await client.start(pings_program, count, str(marks), instance_id=SERVED)
            seed_api.check("pings", await client.result(SERVED, timeout=600), count)
            worker.stop()
            await running
        asyncio.run(serve())

    def publish(self, index: int) -> None:
        if not hasattr(self, "loop"):
            self.loop = asyncio.new_event_loop()
            self.published_to = self.open()
            self.client = Client(self.published_to)
        self.loop.run_until_complete(self.client.publish_event(SERVED, f"e{index}"))

    def close(self) -> None:
        if hasattr(self, "loop"):
            self.loop.run_until_complete(self.client.close())
            self.loop.run_until_complete(self.published_to.close())
            self.loop.close()

    def throughput(self, instances: int, steps: int) -> float:
        async def run() -> float:
            store = self.open()
            client = Client(store)
            ids = [f"t{n}" for n in range(instances)]
            worker = Worker(store, PROGRAMS, concurrency=instances)
            running = asyncio.create_task(worker.run())
            await client.start(seed_api.steps_program, 3, instance_id="warm-up")
            await client.result("warm-up", timeout=600)
            for instance_id in ids:
                await client.start(seed_api.steps_program, steps, instance_id=instance_id)
            start = start_clock()
            results = await asyncio.gather(*(client.result(i, timeout=600) for i in ids))
            elapsed = time.perf_counter() - start
            worker.stop()
            await running
            seed_api.check("throughput", results, [seed_api.expected_steps(steps)] * instances)
            return instances * steps / elapsed
        return asyncio.run(run())


class Gathered(Durable):
    """A store a worker cannot run on (not an InstanceStore): one loop gathers the instances."""

    def throughput(self, instances: int, steps: int) -> float:
        return asyncio.run(seed_api.run_concurrently(self.open(), instances, steps))


class DurableMemory(Gathered):
    store = "memory"
    durability = "memory (each save pickles the whole state)"

    def open(self) -> StateStore:
        if not hasattr(self, "memory"):
            self.memory = InMemoryStateStore()
        return self.memory

    def prepare(self, k: int) -> None:
        raise Unsupported("in-memory store: nothing survives the process")

    def serve(self, count: int, marks: Path) -> None:
        raise Unsupported("in-memory store: another process cannot publish to it")



class DurableDisk(Gathered):
    store = "Disk (a file per instance)"

    def open(self) -> StateStore:
        return DiskStateStore(self.directory / "states")

    def serve(self, count: int, marks: Path) -> None:
        raise Unsupported("no worker runs on the Disk store; use SQLite for that")


class DurableSqlite(Durable):
    store = "SQLite"
    durability = "fsync per commit (WAL, synchronous=FULL); group commit"

    def open(self) -> StateStore:
        return SqliteStateStore(self.directory / "durable.db")


class DurableSqliteNormal(DurableSqlite):
    store = "SQLite, synchronous=NORMAL"
    durability = "no fsync per step (WAL, synchronous=NORMAL: survives a crash of the process)"

    def open(self) -> StateStore:
        return SqliteStateStore(self.directory / "durable.db", synchronous="NORMAL")


class DurablePostgres(Durable):
    store = "PostgreSQL"
    durability = "fsync per commit (server default); group commit"

    def open(self) -> StateStore:
        if self.database_url is None:
            raise Unsupported("no PostgreSQL database given")
        return PostgresStateStore(self.database_url, secret_key="the benchmark's key, never real")
