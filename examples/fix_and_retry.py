"""A bug fails an instance; the developer fixes it; `durable retry` finishes the instance.

The instance reserves stock (a durable call, saved), then charges with a bug
and fails. The fix is deployed as a new worker process; `durable retry` puts
the instance back to its last save, and it finishes on the fixed code with the
variables it had: the stock is not reserved a second time.

    python examples/fix_and_retry.py
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SHOP = textwrap.dedent('''
    from durable import make_durable

    RESERVATIONS = "reservations.log"


    async def reserve(order, items):
        with open(RESERVATIONS, "a") as log:
            log.write(f"{order}\\n")
        return len(items)


    async def charge(order, count):
        return round(100 / (count - 2), 2)  # the bug: two items divide by zero


    async def checkout(order, items):
        reserved = await reserve(order, items)
        amount = await charge(order, reserved)
        return f"{order}: {reserved} items reserved once, charged {amount}"


    checkout_program = make_durable(checkout)
''')


def environment(directory: Path) -> dict[str, str]:
    """For the command line: the shop module importable, as in its deployment."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(directory), os.environ.get("PYTHONPATH")]))}


def durable(*args: str, cwd: Path) -> str:
    """The command line, as an operator would run it."""
    done = subprocess.run([sys.executable, "-m", "durable", *args], cwd=cwd, text=True,
                          capture_output=True, env=environment(cwd))
    return done.stdout.strip() or done.stderr.strip()


async def main(directory: Path) -> None:
    (directory / "shop.py").write_text(SHOP)
    sys.path.insert(0, str(directory))
    os.chdir(directory)
    import shop

    from durable import Client, Worker

    async with Client("sqlite:///shop.db") as client:
        await client.start(shop.checkout_program, "order-7", ["book", "pen"], instance_id="order-7")
        worker = Worker(client.store, [shop.checkout_program])
        running = asyncio.create_task(worker.run())
        try:
            await client.result("order-7", timeout=30)
        except ZeroDivisionError as error:
            print(f"order-7 failed: ZeroDivisionError: {error}")
        worker.stop()
        await running

    # The fix, deployed: a new worker process runs the fixed module.
    source = (directory / "shop.py").read_text()
    (directory / "shop.py").write_text(source.replace("(count - 2)", "count"))
    deployed = subprocess.Popen([sys.executable, "-m", "durable", "worker", "shop", "--store",
                                 "sqlite:///shop.db"], cwd=directory, stderr=subprocess.DEVNULL,
                                env=environment(directory))
    try:
        print(durable("retry", "order-7", "--store", "sqlite:///shop.db", cwd=directory))
        print(durable("result", "order-7", "--wait", "--timeout", "30", "--store",
                      "sqlite:///shop.db", cwd=directory))
    finally:
        deployed.terminate()
        deployed.wait(timeout=30)
    print(f"reservations made: {len((directory / 'reservations.log').read_text().split())}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(main(Path(scratch)))
