"""Fan-out and fan-in inside one durable instance: ``map`` and ``gather``.

A basket of items is priced by ``quote``, one call per item, run as
concurrent branches by ``map(quote, items, concurrency=3)``: never more than
three price lookups at once, and the results come back in input order,
although the lookups take different times. Then ``gather`` runs the tax and
the shipping calculations side by side, and the basket is totalled.

Each finished branch is saved with the instance, so after a crash only the
lookups that had not finished run again. The program is called seed style,
on a ``DurableBackend`` over a SQLite file in a temporary directory.

Run it with ``python examples/fanout.py``.
"""

import asyncio
import tempfile
from pathlib import Path

from durable import DurableBackend, SqliteStateStore, gather, make_durable, map, step

PRICES = {"apples": 2.40, "bread": 3.10, "cheese": 6.75, "coffee": 8.20, "eggs": 3.60,
          "milk": 1.15, "pasta": 1.80}


class Lookups:
    """Counts the price lookups in flight, to show the concurrency limit."""

    running = 0
    most = 0


async def lookup_price(item: str) -> float:
    Lookups.running += 1
    Lookups.most = max(Lookups.most, Lookups.running)
    try:
        await asyncio.sleep(0.01 * (1 + len(item) % 3))  # a slow price service, slower for some
        return PRICES[item]
    finally:
        Lookups.running -= 1


async def quote(item: str) -> tuple[str, float]:
    price = await step(lookup_price, item)  # its result is saved with the branch
    return item, price


async def tax(subtotal: float) -> float:
    return round(subtotal * 0.08, 2)


async def shipping(weight: int) -> float:
    return 4.99 if weight < 10 else 9.99


async def price_basket(items: list[str]) -> dict:
    quotes = await map(quote, items, concurrency=3)  # fan-out, at most 3 at a time
    subtotal = round(sum(price for _, price in quotes), 2)
    sales_tax, delivery = await gather(tax(subtotal), shipping(len(items)))  # side by side
    return {"quotes": quotes, "subtotal": subtotal, "tax": sales_tax, "shipping": delivery,
            "total": round(subtotal + sales_tax + delivery, 2)}


price_basket_program = make_durable(price_basket)


async def main() -> None:
    items = ["milk", "eggs", "bread", "coffee", "apples", "pasta", "cheese"]
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStateStore(Path(directory) / "fanout.db")
        try:
            basket = await price_basket_program(items, orchestration_backend=DurableBackend(store),
                                                instance_id="basket-1")
        finally:
            await store.close()
    print(f"priced {len(items)} items, at most {Lookups.most} at a time:")
    for item, price in basket["quotes"]:
        print(f"  {item:<8}{price:6.2f}")
    print(f"subtotal {basket['subtotal']:.2f}, tax {basket['tax']:.2f}, "
          f"shipping {basket['shipping']:.2f}")
    print(f"total {basket['total']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
