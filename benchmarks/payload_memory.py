#!/usr/bin/env python
"""How many times a large event payload is held in memory while it travels through a store.

    python benchmarks/payload_memory.py sqlite:///tmp/p.db          # 50 MB payload
    python benchmarks/payload_memory.py postgresql://... --mb 20

One process publishes a payload of ``--mb`` megabytes to a waiting instance (as
``Client.publish_event`` does), a worker's claim hands the instance over, and the
payload is read back and unpickled (as the runtime does when the wait returns). Each
step prints the growth of the process's peak resident memory (``ru_maxrss``, which
counts the database driver's own buffers too) and of Python's peak allocations
(tracemalloc), both in multiples of the payload. The payload object itself exists
before the first step: it is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from durable import serialization
from durable.runtime import envelope
from durable.stores import open_store

PROGRAM = "payload_memory:main"


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def measure(url: str, size: int, report: Callable[[str, float, float], None]) -> None:
    store = open_store(url)
    store.max_payload_bytes = 2 * size  # above the default limit, to measure large payloads
    try:
        waiting = envelope.envelope(PROGRAM, envelope.PAUSED, [b"frame"], saves=1,
                                    waiting_for="go")
        await store.create("big", waiting)
        await store.create("warm", waiting)
        # Warm up: connections open, schema made, statements seen once.
        event = await store.publish("warm", "go", serialization.dumps(b"x" * 1000))
        await store.payload("warm", event)
        await store.claim("warm-up", ["nothing"], 1, 60)
        payload = os.urandom(size)  # what the publisher has in hand: not counted
        tracemalloc.start()

        async def step(name: str, work: Callable[[], Awaitable[Any]]) -> Any:
            rss = peak_rss()
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            result = await work()
            python = tracemalloc.get_traced_memory()[1] - before
            report(name, (peak_rss() - rss) / size, python / size)
            return result

        async def publish() -> str:
            return await store.publish("big", "go", serialization.dumps(payload))
        event_id = await step("publish", publish)
        [lease] = await step("claim", lambda: store.claim("w", [PROGRAM], 1, 60))
        assert lease.events == [(event_id, "go")]

        async def read() -> Any:
            return serialization.loads(await store.payload("big", event_id))
        received = await step("payload read", read)
        assert received == payload
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a store URL: sqlite:///file.db or postgresql://...")
    parser.add_argument("--mb", type=float, default=50.0, help="payload size in MB (10^6 bytes)")
    args = parser.parse_args()

    def report(name: str, rss: float, python: float) -> None:
        print(f"{name:>13}: peak RSS +{rss:.2f}x payload, Python allocations +{python:.2f}x")
        sys.stdout.flush()
    asyncio.run(measure(args.url, int(args.mb * 1_000_000), report))


if __name__ == "__main__":
    main()
