#!/usr/bin/env python
"""Fan-out inside one instance, side by side with plain asyncio in one run.

    python benchmarks/fanout.py           # full run (under a minute), writes results/fanout.json
    python benchmarks/fanout.py --quick   # tiny sizes: checks that everything runs

1. ``gather`` of N trivial branches (each one durable call) in one instance, in memory and on
   SQLite, against ``asyncio.gather`` of the same calls: total time, saves, the largest state;
2. ``map`` of M items at concurrency C on SQLite, against an ``asyncio.Semaphore``-bounded
   ``asyncio.gather``: total time, items per second, saves.

See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from durable import DurableBackend, InMemoryStateStore, SqliteStateStore, gather, make_durable, map  # noqa: E402
from durable.stores import StateStore  # noqa: E402

DEFAULT_JSON = HERE / "results" / "fanout.json"


# The workloads (module level: durable finds frames' functions by module and name).
async def leaf(i: int) -> int:
    return i * 2


async def branch(i: int) -> int:
    return await leaf(i) + 1  # one durable call: one checkpoint inside the branch


async def fan_gather(n: int) -> int:
    return sum(await gather(*[branch(i) for i in range(n)]))


async def fan_map(n: int, concurrency: int) -> int:
    return sum(await map(branch, range(n), concurrency=concurrency))


async def plain_gather(n: int) -> int:
    return sum(await asyncio.gather(*[branch(i) for i in range(n)]))


async def plain_map(n: int, concurrency: int) -> int:
    limit = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> int:
        async with limit:
            return await branch(i)
    return sum(await asyncio.gather(*[bounded(i) for i in range(n)]))


class MeasuredBackend(DurableBackend):
    """Counts saves and keeps the size of the largest state saved."""

    def __init__(self, store: StateStore) -> None:
        super().__init__(store)
        self.saves = 0
        self.largest = 0

    async def save_state(self, instance_id: str, state: dict[str, Any]) -> None:
        self.saves += 1
        self.largest = max(self.largest, len(pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))
        await super().save_state(instance_id, state)


@dataclass
class Config:
    branches: int
    items: int
    concurrency: int
    reps: int


FULL = Config(branches=1000, items=10_000, concurrency=100, reps=5)
QUICK = Config(branches=20, items=50, concurrency=5, reps=1)


@dataclass
class Row:
    key: str
    label: str
    values: list[float]
    unit: str
    note: str = ""

    def cells(self) -> tuple[str, str, str]:
        if not self.values:
            return ("-", "-", "-")
        fmt = _FORMATS[self.unit]
        return (fmt(statistics.median(self.values)), fmt(min(self.values)), fmt(max(self.values)))


_FORMATS = {
    "ms": lambda v: f"{v * 1e3:.1f} ms",
    "us": lambda v: f"{v * 1e6:.1f} µs",
    "x": lambda v: f"{v:.2f}x",
    "n": lambda v: f"{v:,.0f}",
    "kB": lambda v: f"{v / 1024:.1f} KiB",
    "/s": lambda v: f"{v:,.0f}/s",
}


async def timed(coroutine: Any) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = await coroutine
    return time.perf_counter() - start, result


async def durable_run(program: Any, args: tuple[Any, ...], store: StateStore) -> tuple[float, MeasuredBackend, Any]:
    backend = MeasuredBackend(store)
    elapsed, result = await timed(program(*args, orchestration_backend=backend, instance_id="fan"))
    return elapsed, backend, result


async def bench(cfg: Config, directory: Path) -> list[Row]:
    gather_program = make_durable(fan_gather)
    map_program = make_durable(fan_map)
    n, m, c = cfg.branches, cfg.items, cfg.concurrency
    runs: dict[str, list[float]] = {key: [] for key in (
        "plain_gather", "memory", "sqlite", "memory_saves", "memory_size", "sqlite_saves",
        "ratio_memory", "ratio_sqlite", "plain_map", "map", "map_rate", "map_saves", "map_size",
        "ratio_map")}
    expected_gather = sum(2 * i + 1 for i in range(n))
    expected_map = sum(2 * i + 1 for i in range(m))
    for rep in range(cfg.reps + 1):  # the first round warms up, untimed
        plain, result = await timed(plain_gather(n))
        assert result == expected_gather
        memory, memory_backend, result = await durable_run(gather_program, (n,), InMemoryStateStore())
        assert result == expected_gather
        gather_store = SqliteStateStore(directory / f"gather-{rep}.db")
        map_store = SqliteStateStore(directory / f"map-{rep}.db")
        try:
            sqlite, sqlite_backend, result = await durable_run(gather_program, (n,), gather_store)
            assert result == expected_gather
            plain_m, result = await timed(plain_map(m, c))
            assert result == expected_map
            mapped, map_backend, result = await durable_run(map_program, (m, c), map_store)
            assert result == expected_map
        finally:
            await gather_store.close()
            await map_store.close()
        if rep == 0:
            continue
        runs["plain_gather"].append(plain)
        runs["memory"].append(memory)
        runs["sqlite"].append(sqlite)
        runs["memory_saves"].append(memory_backend.saves)
        runs["memory_size"].append(memory_backend.largest)
        runs["sqlite_saves"].append(sqlite_backend.saves)
        runs["ratio_memory"].append(memory / plain)
        runs["ratio_sqlite"].append(sqlite / plain)
        runs["plain_map"].append(plain_m)
        runs["map"].append(mapped)
        runs["map_rate"].append(m / mapped)
        runs["map_saves"].append(map_backend.saves)
        runs["map_size"].append(map_backend.largest)
        runs["ratio_map"].append(mapped / plain_m)
    return [
        Row("1a", f"asyncio.gather of {n:,} branches (the plain floor)", runs["plain_gather"], "ms"),
        Row("1b", f"durable gather of {n:,} branches, in memory", runs["memory"], "ms"),
        Row("1c", "  saves / largest state", runs["memory_saves"], "n",
            f"largest {_FORMATS['kB'](max(runs['memory_size'] or [0]))}"),
        Row("1d", "  durable / plain", runs["ratio_memory"], "x"),
        Row("1e", f"durable gather of {n:,} branches, SQLite (synchronous=FULL)", runs["sqlite"], "ms"),
        Row("1f", "  saves", runs["sqlite_saves"], "n"),
        Row("1g", "  durable / plain", runs["ratio_sqlite"], "x"),
        Row("2a", f"asyncio.gather of {m:,} items, {c} at a time (the plain floor)", runs["plain_map"], "ms"),
        Row("2b", f"durable map of {m:,} items, concurrency {c}, SQLite", runs["map"], "ms"),
        Row("2c", "  items per second", runs["map_rate"], "/s"),
        Row("2d", "  saves / largest state", runs["map_saves"], "n",
            f"largest {_FORMATS['kB'](max(runs['map_size'] or [0]))}"),
        Row("2e", "  durable / plain", runs["ratio_map"], "x"),
    ]


def report(rows: list[Row], cfg: Config, took: float) -> str:
    lines = [f"Python {sys.version.split()[0]}; {'quick' if cfg is QUICK else 'full'} mode; "
             f"median, min and max over {cfg.reps} repetitions after 1 untimed; took {took:.1f} s",
             "", f"{'#':<4}{'measurement':<72}{'median':>14}{'min':>14}{'max':>14}  note",
             "-" * 124]
    for row in rows:
        median, low, high = row.cells()
        lines.append(f"{row.key:<4}{row.label:<72}{median:>14}{low:>14}{high:>14}  {row.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        rows = asyncio.run(bench(cfg, Path(directory)))
    print(report(rows, cfg, time.perf_counter() - start))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({row.key: {"label": row.label, "unit": row.unit,
                                               "values": row.values} for row in rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
