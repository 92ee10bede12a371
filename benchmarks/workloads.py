"""The functions the benchmarks run: each is awaited plainly, made durable, and (where the
comparison makes sense) wrapped by duravoke.

They live in a module of their own, at module level, because durable turns awaited calls
into frames only for user code it can read the source of, and finds a saved frame's
function again by ``module:qualname``.
"""

from __future__ import annotations

from typing import Any

from durable import PauseForEventException

# 1. A function that never suspends: arithmetic, list and dict work in one loop.


async def cpu_work(n: int) -> int:
    total = 0
    squares = []
    counts: dict[int, int] = {}
    for i in range(n):
        x = (i * i + 3 * i) % 97
        squares.append(x)
        counts[x % 10] = counts.get(x % 10, 0) + 1
        total += x
    return total + len(squares) + sum(counts.values())


async def trivial() -> int:
    return 1


# 2. Durable calls in a loop: each awaited ``helper`` call is a frame, and a save after it.


async def helper(i: int) -> int:
    return i + 1


async def call_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += await helper(i)
    return total


# 3. K completed durable calls, then a pause; resuming must not depend on K.


async def step(i: int) -> int:
    return i


async def calls_then_pause(k: int) -> int:
    total = 0
    for i in range(k):
        total += await step(i)
    raise PauseForEventException("go")
    return total + 1


# duravoke versions: its decorator needs its Duravoke object, so they are built per store.


class Paused(Exception):
    """What the duravoke version raises to stop (duravoke has no pause: it re-runs later)."""


def duravoke_call_loop(dv: Any) -> Any:
    durable_helper = dv.duravoke(helper)

    async def call_loop(n: int) -> int:
        total = 0
        for i in range(n):
            total += await durable_helper(i)
        return total

    return dv.duravoke(call_loop)


def duravoke_calls_then_pause(dv: Any, control: dict[str, bool]) -> Any:
    durable_step = dv.duravoke(step)

    async def calls_then_pause(k: int) -> int:
        total = 0
        for i in range(k):
            total += await durable_step(i)
        if control["pause"]:
            raise Paused("go")
        return total + 1

    return dv.duravoke(calls_then_pause)


# 4. Compile time: a medium-size function, written to a fresh module for every measurement
# (``{salt}`` makes each copy different, so no cache keyed by code or by source can hit).

MEDIUM_MODULE = '''
import asyncio


class Resource:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


async def fetch(item):
    return item * 2


async def medium(items, limit=10):
    """A mid-size workflow: loops, branches, try/except/finally, with, awaits in expressions."""
    salt = {salt}
    results = []
    seen = {{}}
    errors = 0
    for index, item in enumerate(items):
        if item in seen:
            seen[item] += 1
            continue
        seen[item] = 1
        try:
            value = await fetch(item) + salt
            if value % 3 == 0:
                value = value // 3
            elif value % 5 == 0:
                value -= await fetch(index)
            else:
                value += 1
        except ValueError as error:
            errors += 1
            results.append(("error", str(error)))
            continue
        finally:
            limit -= 1
        with Resource():
            doubled = [v * 2 for v in range(value % 7)]
            results.append((index, value, sum(doubled)))
        if limit <= 0:
            break
    count = 0
    while count < 3:
        count += 1
        await asyncio.sleep(0)
        if count == 2 and not results:
            break
    summary = {{"n": len(results), "errors": errors, "distinct": len(seen)}}
    total = sum(r[1] for r in results if r[0] != "error")
    return summary, total + await fetch(count)
'''
