"""A flaky email sender that kills its process, after the duravoke demo.

``send_email`` has a 50% chance of crashing the whole process (``os._exit``,
no cleanup) before it sends. ``email_users`` sends ten emails, one durable
call each; every completed call is saved in a SQLite file before the
program goes on. Run the program again after a crash and it continues where
the last run died, without replaying anything: an email that was sent is
never sent again, and each run prints only the emails it sent itself. Once
all ten are sent it prints ``finished``; later runs find the instance
finished and print nothing.

(Code after the last save runs again after a crash: that is why the email is
printed by ``send_email`` as it goes out, not by ``email_users`` after the
call returns, where a crash before the next save would print it twice.)

Run it until it says ``finished``::

    python examples/flaky_email.py [STATE_FILE]     # default ./flaky_email.db

Set ``FLAKY_EMAIL_SEED`` to make the crashes of a run reproducible.
"""

import asyncio
import os
import random
import sys

from durable import DurableBackend, SqliteStateStore, make_durable

FLAKY = random.Random(os.environ.get("FLAKY_EMAIL_SEED"))  # no seed: different every run


async def send_email(user_id: int) -> str:
    if FLAKY.random() < 0.5:  # our email API has a 50% chance of taking the server down
        print("crash", flush=True)
        os._exit(1)
    print(f"Sent email to user_id: {user_id}", flush=True)  # the email goes out
    return f"receipt-{user_id}"


async def email_users(user_ids: list[int]) -> list[str]:
    receipts = []
    for user_id in user_ids:
        receipts.append(await send_email(user_id))  # saved once it returns: never sent twice
    print("finished", flush=True)
    return receipts


email_program = make_durable(email_users)


async def main() -> None:
    store = SqliteStateStore(sys.argv[1] if len(sys.argv) > 1 else "flaky_email.db")
    try:
        await email_program(list(range(10)), orchestration_backend=DurableBackend(store),
                            instance_id="email-users")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
