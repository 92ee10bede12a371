"""A worker and a client on the default store: SQLite in ./durable.db.

The client starts an order; the worker runs it until it waits for the
payment event; the client publishes the event and waits for the result.
In production the worker runs in processes of its own (``durable worker
MODULE``) and clients anywhere start programs imported from that module;
``durable list`` shows the instances in the store.
"""

import asyncio
import uuid

from durable import Client, PauseForEventException, Worker, make_durable


async def reserve(order_id: str, items: list[str]) -> int:
    print(f"{order_id}: reserved {', '.join(items)}")
    return len(items)


async def ship(order_id: str) -> str:
    print(f"{order_id}: shipped")
    return f"parcel-{order_id}"


async def order(order_id: str, items: list[str]) -> str:
    reserved = await reserve(order_id, items)  # saved once done: never reserved twice
    raise PauseForEventException("paid")  # the worker drops the instance until it is paid
    parcel = await ship(order_id)
    return f"{order_id}: {reserved} items in {parcel}"


order_program = make_durable(order)


async def main() -> None:
    async with Client() as client:  # $DURABLE_STORE, else sqlite:///durable.db
        worker = Worker(client.store, [order_program])
        running = asyncio.create_task(worker.run())
        order_id = f"order-{uuid.uuid4().hex[:6]}"
        handle = await client.start(order_program, order_id, ["book", "pen"], instance_id=order_id)
        info = await handle.wait_for_status("waiting", timeout=30)
        print(f"{order_id}: {info.status} for {info.waiting_for!r}")
        await handle.publish_event("paid")
        print(await handle.result(timeout=30))
        worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
