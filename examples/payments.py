"""Order processing with payment retries, after the AWS Durable Execution SDK's quick example.

``validate_order``, ``charge_payment`` and ``fulfill_order`` are steps: each
runs once and its result is saved before the order goes on. The payment
gateway is flaky: the first two charges fail with ``ConnectionError``, and the
step's ``RetryPolicy`` tries again after 1 s, then 2 s (durable timers: the
process could exit in between). The third charge goes through; the order
then waits 5 s, like ``context.wait(seconds=5)`` in the seed, and is
fulfilled.

A worker and a client share a SQLite store in a temporary directory. Time is
a ``VirtualClock`` that ``main()`` moves to each wake-up as soon as the order
waits for one, so the 8 seconds of waiting take none; the ``t+`` column is
the order's own (virtual) time.

Run it with ``python examples/payments.py``.
"""

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from durable import Client, RetryPolicy, SqliteStateStore, Worker, make_durable, sleep, step
from durable.testing import VirtualClock

START = datetime(2026, 1, 1, tzinfo=UTC)
CLOCK = VirtualClock(START)


def now() -> str:
    return f"t+{CLOCK.time() - START.timestamp():.0f}s"


class FlakyGateway:
    """A payment gateway whose first ``failures`` calls time out."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def charge(self, order_id: str, amount: float) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("payment gateway timed out")
        return f"txn-{order_id}-{self.calls}"


GATEWAY = FlakyGateway(failures=2)


@step
def validate_order(order_id: str) -> dict:
    print(f"{now()} validated {order_id}")
    return {"order_id": order_id, "valid": True}


@step(retry=RetryPolicy(max_attempts=5, initial_delay=1, backoff=2))
def charge_payment(order_id: str, amount: float) -> dict:
    attempt = GATEWAY.calls + 1
    try:
        transaction_id = GATEWAY.charge(order_id, amount)
    except ConnectionError as error:
        print(f"{now()} charge attempt {attempt}: {type(error).__name__}: {error}")
        raise
    print(f"{now()} charge attempt {attempt}: charged {amount:.2f}")
    return {"transaction_id": transaction_id, "status": "completed"}


@step
def fulfill_order(order_id: str) -> dict:
    print(f"{now()} fulfilled {order_id}")
    return {"tracking_number": f"TRK-{order_id}"}


async def process_order(event: dict) -> dict:
    order_id = event["order_id"]
    validation = await validate_order(order_id)
    if not validation["valid"]:
        return {"status": "failed", "reason": "invalid_order"}
    payment = await charge_payment(order_id, event["amount"])
    await sleep(5)  # wait for the payment to settle; the instance is saved meanwhile
    fulfillment = await fulfill_order(order_id)
    return {
        "status": "completed",
        "order_id": order_id,
        "transaction_id": payment["transaction_id"],
        "tracking_number": fulfillment["tracking_number"],
    }


process_order_program = make_durable(process_order)


async def fast_forward(client: Client, instance_id: str, clock: VirtualClock) -> None:
    """Until the instance ends, move the clock to each wake-up time it waits for."""
    while (info := await client.status(instance_id)).status not in ("finished", "failed",
                                                                    "terminated"):
        if info.status == "waiting" and info.wake_at is not None and info.wake_at > clock.time():
            clock.set(info.wake_at)
        await asyncio.sleep(0.01)


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStateStore(Path(directory) / "payments.db")
        client = Client(store)
        worker = Worker(store, [process_order_program], clock=CLOCK)
        running = asyncio.create_task(worker.run())
        try:
            handle = await client.start(process_order_program, {"order_id": "order-1001",
                                                                "amount": 42.5},
                                        instance_id="order-1001")
            await fast_forward(client, handle.instance_id, CLOCK)
            print(await handle.result(timeout=30))
        finally:
            worker.stop()
            await running
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
