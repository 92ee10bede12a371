#!/usr/bin/env python
"""Write a store the way a release of durable writes it, for the migration tests.

Run it with that release first on the path (a checkout of it, with this file and
release_program.py copied into its tests/):

    python tests/releases/make.py sqlite:///tests/releases/sqlite-schemaN.db
    python tests/releases/make.py postgresql://user@host/empty_database
    pg_dump --inserts --no-owner --no-privileges --no-comments -d ... > postgres-schemaN.sql

A failed instance keeps its traceback, file names included: make them from a checkout
at a neutral path (the kept ones were made in /src/durable).

Each kept store holds the same instances of ``release_program`` (one in each situation a
deploy can meet: waiting with and without its event, on a timer, never run, held by a
dead worker's lease, suspended, finished, failed, terminated); test_releases.py opens it
with today's code, checks what it shows, and runs every unfinished instance to its end.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from release_program import PROGRAMS, explode_program, order_program, reminder_program

from durable import Client, Worker


async def populate(url: str) -> None:
    async with Client(url) as client:
        worker = Worker(client.store, PROGRAMS, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        for instance_id, name, items in [("waiting", "ann", 3), ("event-pending", "bob", 4),
                                         ("finished", "cid", 2), ("terminated", "dee", 1),
                                         ("suspended", "eve", 2)]:
            await client.start(order_program, name, items, instance_id=instance_id)
        await client.start(reminder_program, "fay", instance_id="timer")
        await client.start(explode_program, "gus", instance_id="failed")
        for instance_id in ("waiting", "event-pending", "finished", "terminated", "suspended",
                            "timer"):
            await client.wait_for_status(instance_id, "waiting", timeout=30)
        await client.wait_for_status("failed", "failed", timeout=30)
        await client.publish_event("finished", "approve", "carol")
        await client.result("finished", timeout=30)
        worker.stop()
        await running
        await client.terminate("terminated", "customer left")
        await client.suspend("suspended")
        # A worker that died holding a lease: claimed, never saved, never given back.
        await client.start(order_program, "hal", 1, instance_id="stale-lease")
        [lease] = await client.store.claim("dead-worker", [order_program.key], 1, 1.0)
        assert lease.instance_id == "stale-lease", lease
        await client.publish_event("event-pending", "approve", "dan")
        await client.start(order_program, "ida", 5, instance_id="never-run")


if __name__ == "__main__":
    asyncio.run(populate(sys.argv[1]))
