"""Durable programs whose instances are kept in stores made by earlier releases (releases/).

Their saved frames name these functions and the fingerprints of their source: never edit
them, or the kept instances no longer match the code that resumes them.
"""

from __future__ import annotations

from durable import RetryPolicy, make_durable, set_status, sleep, step, wait_for_event


async def add(total: int, item: int) -> int:
    return total + item


async def order(name: str, items: int) -> str:
    total = 0
    for item in range(items):
        total = await add(total, item)
    await set_status({"total": total})
    approver = await wait_for_event("approve")
    return f"{name}: {total} approved by {approver}"


async def reminder(name: str) -> str:
    await sleep(60)
    return f"reminded {name}"


def refuse(name: str) -> None:
    raise ValueError(f"{name} is refused")


async def explode(name: str) -> None:
    await step(refuse, name, retry=RetryPolicy(max_attempts=1))


order_program = make_durable(order)
reminder_program = make_durable(reminder)
explode_program = make_durable(explode)
PROGRAMS = [order_program, reminder_program, explode_program]
