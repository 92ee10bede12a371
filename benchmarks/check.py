#!/usr/bin/env python
"""How long `durable check` takes: 10,000 waiting instances on SQLite against changed code.

    python benchmarks/check.py            # 10,000 instances
    python benchmarks/check.py --quick    # 500, to see that it runs

A program whose instances pause at once is run by a worker until every
instance waits; then its module is edited (code after the pause changes, so
every frame moves) and ``Client.check`` is timed over all of them, 5 times
after 1 untimed, reading only the metadata the store keeps beside each state.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from durable import Client, Worker, make_durable

PROGRAM = '''
from durable import PauseForEventException, make_durable


async def record(n):
    return n


async def order(n):
    total = n
    raise PauseForEventException("paid")
    total = await record(total + 1)
    return total


order_program = make_durable(order)
'''


async def measure(count: int, directory: Path) -> list[float]:
    (directory / "check_orders.py").write_text(PROGRAM)
    sys.path.insert(0, str(directory))
    module = importlib.import_module("check_orders")
    async with Client(f"sqlite:///{directory / 'check.db'}") as client:
        for n in range(count):
            await client.start(module.order_program, n, instance_id=f"order-{n}")
        worker = Worker(client.store, [module.order_program], concurrency=200)
        running = asyncio.create_task(worker.run())
        while len(await client.list(status="waiting", limit=count)) < count:
            await asyncio.sleep(0.2)
        worker.stop()
        await running
        (directory / "check_orders.py").write_text(PROGRAM.replace("total + 1", "total + 2"))
        importlib.reload(module)
        changed = make_durable(module.order)
        times = []
        for _ in range(6):
            start = time.perf_counter()
            checked = await client.check([changed])
            times.append(time.perf_counter() - start)
            assert len(checked) == count and all(c.frames[0].outcome == "moves" for c in checked)
        return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    count = 500 if parser.parse_args().quick else 10_000
    with tempfile.TemporaryDirectory() as scratch:
        times = asyncio.run(measure(count, Path(scratch)))
    print(f"durable check of {count:,} waiting instances (SQLite): median "
          f"{statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
          f"over {len(times)} runs")


if __name__ == "__main__":
    main()
