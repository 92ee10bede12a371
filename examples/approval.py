"""Human approval with a 24-hour timeout, after the Durable Task SDK's purchase order sample.

Orders under 1000 are approved at once. Larger ones ask a manager, then wait
for the ``approval_received`` event, whose payload names the approver; if
none comes within 24 hours, ``wait_for_event`` raises ``EventTimeout`` and the
order is cancelled. The deadline is saved with the instance, so it holds
however often the process restarts meanwhile.

A worker and a client share a SQLite store in a temporary directory, on a
``VirtualClock``: one order is approved by Maria, the other's day without an
answer is one ``clock.advance``.

Run it with ``python examples/approval.py``.
"""

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from durable import (
    Client,
    EventTimeout,
    SqliteStateStore,
    Worker,
    make_durable,
    step,
    wait_for_event,
)
from durable.testing import VirtualClock


def send_approval_request(order_id: str, cost: int) -> None:
    print(f"{order_id}: approval requested for {cost}")


def place_order(order_id: str) -> None:
    print(f"{order_id}: order placed")


async def purchase_order(order_id: str, cost: int) -> str:
    if cost < 1000:
        return f"{order_id}: auto-approved"
    await step(send_approval_request, order_id, cost)
    try:
        approval = await wait_for_event("approval_received", timeout=timedelta(hours=24))
    except EventTimeout:
        return f"{order_id}: cancelled, no approval within 24 hours"
    await step(place_order, order_id)
    return f"{order_id}: approved by {approval['approver']!r}"


purchase_order_program = make_durable(purchase_order)


async def main() -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStateStore(Path(directory) / "approval.db")
        client = Client(store)
        worker = Worker(store, [purchase_order_program], clock=clock)
        running = asyncio.create_task(worker.run())
        try:
            small = await client.start(purchase_order_program, "PO-1", 250, instance_id="PO-1")
            print(await small.result(timeout=30))

            approved = await client.start(purchase_order_program, "PO-2", 1500, instance_id="PO-2")
            info = await approved.wait_for_status("waiting", timeout=30)
            print(f"PO-2: {info.status} for {info.waiting_for!r}")
            await approved.publish_event("approval_received", {"approver": "Maria"})
            print(await approved.result(timeout=30))

            forgotten = await client.start(purchase_order_program, "PO-3", 2500,
                                           instance_id="PO-3")
            info = await forgotten.wait_for_status("waiting", timeout=30)
            print(f"PO-3: {info.status} for {info.waiting_for!r} "
                  f"until {datetime.fromtimestamp(info.wake_at, UTC):%Y-%m-%d %H:%M} UTC")
            clock.advance(timedelta(hours=24).total_seconds())
            print(await forgotten.result(timeout=30))
        finally:
            worker.stop()
            await running
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
