"""PostgresStateStore specifics, against a real throwaway PostgreSQL (see postgres_server.py).

The behaviour every InstanceStore shares is checked by the shared conformance
suite (and the SQL core's by test_sql_core.py); these tests cover what this
database adds: its schema under concurrent openers, its errors, LISTEN/NOTIFY,
group commit seen from the database, fencing on the database's clock, SKIP
LOCKED claims from several stores, and one store used from many event loops.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from durable import LeaseLost, StoreError, UnknownInstanceError
from durable.runtime.envelope import envelope
from durable.stores import InstanceStore
from durable.stores.postgres import PostgresStateStore
from durable.stores.sql.schema import SCHEMA_VERSION

PROGRAM = "tests:program"
LONG = 60.0  # a timeout no passing test waits for


def state(status: str = "running", *, saves: int = 0, waiting_for: str | None = None,
          consumed: tuple[str, ...] = ()) -> dict:
    return envelope(PROGRAM, status, [b"frame"], saves=saves, waiting_for=waiting_for,
                    consumed_events=consumed)


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[PostgresStateStore]:
    opened = PostgresStateStore(postgres_dsn)
    yield opened
    await opened.close()


def query(dsn: str, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(sql, args)
        return cursor.fetchall() if cursor.description is not None else []


def test_the_store_is_an_instance_store_and_is_exported_lazily() -> None:
    import durable
    import durable.stores

    assert issubclass(PostgresStateStore, InstanceStore)
    assert durable.PostgresStateStore is PostgresStateStore
    assert durable.stores.PostgresStateStore is PostgresStateStore
    # Importing durable does not need psycopg: a fresh interpreter without it still imports.
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "import durable, durable.stores\n"
            "try:\n    durable.PostgresStateStore\nexcept ImportError:\n    print('lazy')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


# --- schema ---------------------------------------------------------------------------------------

async def test_schema_is_created_on_first_use_and_concurrent_openers_do_not_race(
        postgres_dsn: str) -> None:
    assert query(postgres_dsn, "SELECT to_regclass('durable_instances')") == [(None,)]
    stores = [PostgresStateStore(postgres_dsn) for _ in range(8)]
    try:
        # Eight first-time openers at once, each on its own connection.
        assert await asyncio.gather(*(s.load("nobody") for s in stores)) == [None] * 8
        assert query(postgres_dsn, "SELECT version FROM durable_schema") == [(SCHEMA_VERSION,)]
        tables = {row[0] for row in query(
            postgres_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        assert {"durable_schema", "durable_instances", "durable_events"} <= tables
        indexes = {row[0] for row in query(
            postgres_dsn, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
        assert "durable_instances_runnable" in indexes
        assert "durable_events_by_instance" in indexes
    finally:
        for s in stores:
            await s.close()
    # Opening again (a new process) changes nothing and keeps the data.
    again = PostgresStateStore(postgres_dsn)
    try:
        assert await again.create("a", state())
        second = PostgresStateStore(postgres_dsn)
        assert (await second.load("a"))["program"] == PROGRAM
        await second.close()
        assert query(postgres_dsn, "SELECT version FROM durable_schema") == [(SCHEMA_VERSION,)]
    finally:
        await again.close()


async def test_a_newer_schema_is_refused(postgres_dsn: str) -> None:
    query(postgres_dsn, "CREATE TABLE durable_schema (version integer NOT NULL)")
    query(postgres_dsn, "INSERT INTO durable_schema VALUES (%s)", SCHEMA_VERSION + 1)
    store = PostgresStateStore(postgres_dsn)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await store.load("a")
    await store.close()


# --- errors ---------------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


async def test_an_unreachable_server_is_a_store_error_naming_it_without_the_password() -> None:
    port = _closed_port()
    store = PostgresStateStore(f"postgresql://durable:pw-s3cret@127.0.0.1:{port}/somewhere")
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        await store.load("a")
    message = str(raised.value)
    assert "127.0.0.1" in message and str(port) in message and "somewhere" in message
    assert "refused" in message.lower()  # the underlying reason
    assert "pw-s3cret" not in message and "pw-s3cret" not in repr(store)
    with pytest.raises(StoreError) as raised:
        store.append_event("a", "go")  # the synchronous path says the same
    assert str(port) in str(raised.value) and "pw-s3cret" not in str(raised.value)
    assert time.monotonic() - started < 10  # no retrying for minutes
    await store.close()


def test_a_bad_connection_string_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as raised:
        PostgresStateStore("postgresql//durable:pw-s3cret@db.example/app")
    assert "pw-s3cret" not in str(raised.value)
    with pytest.raises(StoreError, match="no_such_option"):
        PostgresStateStore("host=localhost no_such_option=1 password=pw-s3cret")


async def test_unknown_instance_names_the_database_not_the_password(postgres_dsn: str) -> None:
    dsn = postgres_dsn.replace("postgres@", "postgres:pw-s3cret@", 1)  # trust auth ignores it
    store = PostgresStateStore(dsn)
    try:
        with pytest.raises(UnknownInstanceError) as raised:
            await store.terminate("nobody", "why")
        assert "nobody" in str(raised.value) and "PostgreSQL" in str(raised.value)
        assert "pw-s3cret" not in str(raised.value)
    finally:
        await store.close()


# --- LISTEN/NOTIFY --------------------------------------------------------------------------------

async def test_a_publish_from_a_synchronous_call_in_another_thread_wakes_the_waiter(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    assert await store.create("somebody", state("paused", waiting_for="go"))  # before listening
    await store.wait_for_change(0)  # listening from here on
    publisher = PostgresStateStore(postgres_dsn)
    published = threading.Event()

    def publish() -> None:
        time.sleep(0.2)
        published.set()
        publisher.append_event("somebody", "go")  # sync: its own connection, then NOTIFY

    thread = threading.Thread(target=publish)
    started = time.monotonic()
    thread.start()
    await store.wait_for_change(LONG)
    waited = time.monotonic() - started
    thread.join()
    await publisher.close()
    assert published.is_set(), "wait_for_change returned before anything was published"
    assert waited < LONG / 2, "wait_for_change returned at its timeout, not at the notification"
    assert [name for _, name in await store.events("somebody")] == ["go"]


async def test_a_publish_from_another_process_wakes_the_waiter(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    assert await store.create("somebody", state("paused", waiting_for="go"))  # before listening
    await store.wait_for_change(0)
    code = ("import sys\nfrom durable.stores.postgres import PostgresStateStore\n"
            "print(PostgresStateStore(sys.argv[1]).append_event('somebody', 'go'))\n")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, postgres_dsn,
                                                   stdout=subprocess.PIPE)
    started = time.monotonic()
    await store.wait_for_change(LONG)
    waited = time.monotonic() - started
    # Woken by the notification, the event it announces is already committed.
    assert [name for _, name in await store.events("somebody")] == ["go"]
    assert waited < LONG / 2
    out, _ = await process.communicate()
    assert process.returncode == 0 and out.strip().isdigit()


async def test_a_notification_between_two_waits_is_not_lost(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    await store.wait_for_change(0)
    other = PostgresStateStore(postgres_dsn)
    try:
        assert await other.create("a", state())
        # Nobody waits now; the notification arrives meanwhile and is remembered.
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await store.wait_for_change(LONG)
        assert time.monotonic() - started < 1, "the notification that arrived between waits was lost"
        # Seen once: the next wait waits (here for its short timeout).
        started = time.monotonic()
        await store.wait_for_change(0.3)
        assert time.monotonic() - started >= 0.25
    finally:
        await other.close()


async def test_work_that_ends_a_lease_wakes_other_workers(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    assert await store.create("a", state())
    worker = PostgresStateStore(postgres_dsn)
    try:
        [lease] = await worker.claim("w", [PROGRAM], 1, LONG)
        await store.wait_for_change(0)
        woken = asyncio.create_task(store.wait_for_change(LONG))
        await asyncio.sleep(0.2)
        assert not woken.done()  # claiming and plain running saves announce nothing
        await worker.save_leased(lease, state(saves=1))
        await asyncio.sleep(0.3)
        assert not woken.done()
        await worker.release(lease)  # the instance is runnable again: others are told
        await asyncio.wait_for(woken, LONG / 2)
    finally:
        await worker.close()


# --- connections the server closed -------------------------------------------------------------

def _close_from_the_server(dsn: str) -> int:
    """Terminate every other connection to this database (a restart, an idle timeout)."""
    [(count,)] = query(dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    return count


async def test_connections_the_server_closed_are_replaced_before_they_fail_a_call(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    assert await store.create("a", state())
    assert await store.load("a") is not None
    await store.wait_for_change(0)  # listening
    await asyncio.sleep(1.2)  # long enough unused that a connection is checked before use
    assert _close_from_the_server(postgres_dsn) >= 3  # the writer's, a reader's, the listener's
    assert (await store.load("a"))["saves"] == 0
    await store.save("a", state(saves=1))
    assert (await store.load("a"))["saves"] == 1
    # The listener listens again, and wakes its waiters (what it missed may be work) ...
    started = time.monotonic()
    await store.wait_for_change(LONG)
    assert time.monotonic() - started < LONG / 2
    # ... and hears what other processes announce again.
    other = PostgresStateStore(postgres_dsn)

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        await other.publish("a", "go")
    try:
        publisher = asyncio.create_task(publish_later())
        started = time.monotonic()
        await store.wait_for_change(LONG)
        assert 0.25 < time.monotonic() - started < LONG / 2  # woken by the publish
        await publisher
    finally:
        await other.close()


# --- group commit ---------------------------------------------------------------------------------

def _transactions_that_wrote(dsn: str, table: str = "durable_instances") -> int | None:
    """Distinct commits behind the rows (savepoints share their transaction's commit time)."""
    if query(dsn, "SELECT current_setting('track_commit_timestamp')") != [("on",)]:
        return None  # an external server without it: the store's own count must do
    [(count,)] = query(dsn, f"SELECT count(DISTINCT pg_xact_commit_timestamp(xmin)) FROM {table}")
    return count


async def test_concurrent_saves_on_one_loop_share_transactions(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    for n in range(100):  # one at a time: each its own transaction
        await store.create(f"i{n:03}", state())
    if (created := _transactions_that_wrote(postgres_dsn)) is not None:
        assert created == 100  # the measure works
    before = store.commits
    await asyncio.gather(*(store.save(f"i{n:03}", state(saves=n + 1)) for n in range(100)))
    transactions = store.commits - before
    assert 1 <= transactions < 10
    if (on_disk := _transactions_that_wrote(postgres_dsn)) is not None:
        assert on_disk == transactions
    for n in range(100):
        assert (await store.load(f"i{n:03}"))["saves"] == n + 1


async def test_a_refused_save_does_not_undo_the_others_in_its_batch(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    for n in range(20):
        assert await store.create(f"i{n:02}", state())
    old = await store.claim("old", [PROGRAM], 20, 0)  # expired at once
    assert len(old) == 20
    other = PostgresStateStore(postgres_dsn)
    try:
        taken = {lease.instance_id for lease in await other.claim("new", [PROGRAM], 10, LONG)}
        assert len(taken) == 10
        before = store.commits
        outcomes = await asyncio.gather(
            *(store.save_leased(lease, state(saves=7)) for lease in old), return_exceptions=True)
        assert store.commits - before < 5
        for lease, outcome in zip(old, outcomes, strict=True):
            saved = (await store.load(lease.instance_id))["saves"]
            if lease.instance_id in taken:
                assert isinstance(outcome, LeaseLost) and saved == 0
            else:
                assert outcome is None and saved == 7
    finally:
        await other.close()


async def test_saving_consumes_events_in_the_same_transaction(store: PostgresStateStore) -> None:
    assert await store.create("a", state("paused", waiting_for="go"))
    first = store.append_event("a", "go", b"payload")
    second = await store.publish("a", "go")
    assert await store.events("a") == [(first, "go"), (second, "go")]
    assert int(second) > int(first)
    [lease] = await store.claim("w", [PROGRAM], 5, LONG)
    await store.save_leased(lease, state(saves=1, consumed=(first,)))
    assert await store.events("a") == [(second, "go")]
    await store.save("a", state("paused", saves=2, waiting_for="later", consumed=(second,)))
    assert await store.events("a") == []


# --- leases ---------------------------------------------------------------------------------------

async def test_a_renewal_locks_rows_in_the_order_saves_do(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    """A batch of saves locks its rows by id; a renewal of the same leases, given in another
    order, must too, or the two deadlock (one of them is rolled back)."""
    for name in ("a", "b"):
        assert await store.create(name, state())
    leases = sorted(await store.claim("w", [PROGRAM], 2, LONG), key=lambda lease: lease.instance_id)
    # Enough other rows that the planner looks the leases up by index, in the order given.
    query(postgres_dsn, "INSERT INTO durable_instances (id, program, status, state, created_at,"
          " updated_at) SELECT 'z' || n, 'other', 'finished', '', 0, 0"
          " FROM generate_series(1, 5000) AS n")
    query(postgres_dsn, "ANALYZE durable_instances")
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as batch:
        await batch.execute("SET deadlock_timeout = '100ms'")
        await batch.execute("SELECT 1 FROM durable_instances WHERE id = 'a' FOR UPDATE")
        renewal = asyncio.create_task(store.renew(list(reversed(leases)), LONG))
        await asyncio.sleep(0.3)  # the renewal now waits for "a", holding nothing (or "b")
        assert not renewal.done()
        await batch.execute("SELECT 1 FROM durable_instances WHERE id = 'b' FOR UPDATE")
        await batch.commit()
    assert await asyncio.wait_for(renewal, LONG) == []  # both leases still held


@pytest.mark.parametrize("atomic", [False, True], ids=["in a transaction", "one statement"])
async def test_an_operation_rolled_back_by_a_deadlock_runs_again(store: PostgresStateStore,
                                                                 atomic: bool) -> None:
    """The database picks a deadlock's victim; the victim's savepoint runs again, so the save
    succeeds instead of giving its instance back (which would re-run the program's calls).
    A write of one statement, alone in its batch, has no savepoint: it runs again alone."""
    assert await store.create("a", state())
    tries = []

    def operation(conn: psycopg.Connection) -> str:
        tries.append(1)
        conn.execute("UPDATE durable_instances SET reason = 'touched' WHERE id = 'a'")
        if len(tries) < 3:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "done"

    assert await store._write("a", operation, wakes=False, atomic=atomic) == "done"
    assert len(tries) == 3
    assert (await store.info("a")).reason == "touched"

    def never_succeeds(conn: psycopg.Connection) -> None:
        raise psycopg.errors.SerializationFailure("could not serialize access")

    with pytest.raises(StoreError, match="could not serialize access"):
        await store._write("a", never_succeeds, wakes=False, atomic=atomic)


async def test_an_expired_lease_is_fenced_off(store: PostgresStateStore, postgres_dsn: str) -> None:
    assert await store.create("a", state())
    [stale] = await store.claim("old", [PROGRAM], 1, 0)  # expires at once
    other = PostgresStateStore(postgres_dsn)
    try:
        [fresh] = await other.claim("new", [PROGRAM], 1, LONG)
        assert fresh.instance_id == "a" and fresh.token > stale.token
        await other.save_leased(fresh, state(saves=2))
        with pytest.raises(LeaseLost) as raised:
            await store.save_leased(stale, state(saves=1))
        assert raised.value.instance_id == "a" and raised.value.token == stale.token
        assert (await store.load("a"))["saves"] == 2
        assert await store.renew([stale, fresh], LONG) == [stale]
        await store.release(stale)  # not held: changes nothing
        info = await store.info("a")
        assert info is not None and info.lease_owner == "new" and info.status == "running"
        assert await other.claim("third", [PROGRAM], 1, LONG) == []  # a live lease holds it
        # A paused save ends the lease.
        await other.save_leased(fresh, state("paused", saves=3, waiting_for="go"))
        info = await store.info("a")
        assert info is not None and info.lease_owner is None and info.status == "waiting"
        assert await store.claim("third", [PROGRAM], 1, LONG) == []  # nothing published yet
        store.append_event("a", "other")
        assert await store.claim("third", [PROGRAM], 1, LONG) == []  # not what it waits for
        store.append_event("a", "go")
        [third] = await store.claim("third", [PROGRAM], 1, LONG)
        assert third.token == fresh.token + 1
        # Termination fences off the holder too.
        assert await store.terminate("a", "enough")
        with pytest.raises(LeaseLost):
            await store.save_leased(third, state(saves=4))
        assert await store.events("a") == []
        assert (await store.load("a"))["status"] == "terminated"
        assert not await store.terminate("a", "again")
    finally:
        await other.close()


async def test_two_stores_claiming_at_once_never_share_an_instance(
        store: PostgresStateStore, postgres_dsn: str) -> None:
    await asyncio.gather(*(store.create(f"i{n:03}", state()) for n in range(200)))
    other = PostgresStateStore(postgres_dsn, readers=8)
    claimed: list[str] = []

    async def claimer(source: PostgresStateStore, owner: str) -> None:
        while leases := await source.claim(owner, [PROGRAM], 7, LONG):
            claimed.extend(lease.instance_id for lease in leases)

    try:
        await asyncio.gather(*(claimer(source, f"{name}-{n}")
                               for name, source in (("a", store), ("b", other))
                               for n in range(8)))
        # A claimer may stop early while another holds the rows it skipped: sweep them up.
        claimed.extend(lease.instance_id for lease in await store.claim("sweep", [PROGRAM], 500, LONG))
        assert len(claimed) == len(set(claimed)) == 200
        assert query(postgres_dsn, "SELECT DISTINCT fence FROM durable_instances") == [(1,)]
    finally:
        await other.close()


async def test_names_with_nul_characters_round_trip(store: PostgresStateStore) -> None:
    # PostgreSQL text cannot hold NUL: such names are stored escaped, and come back as given.
    # (Instance ids cannot hold control characters at all; events, owners and reasons can.)
    odd, event, marked = "odd id", "ev\x00ent", "\x01marked"
    assert await store.create(odd, state("paused", waiting_for=event))
    assert await store.create("plain", state())
    event_id = store.append_event(odd, event)
    marked_id = store.append_event("plain", marked)
    assert await store.events(odd) == [(event_id, event)]
    assert await store.events("plain") == [(marked_id, marked)]
    leases = sorted(await store.claim("own\x00er", [PROGRAM], 5, LONG), key=lambda x: x.instance_id)
    assert [lease.instance_id for lease in leases] == [odd, "plain"]
    assert leases[0].owner == "own\x00er" and leases[0].program == PROGRAM
    assert await store.renew(leases, LONG) == []
    await store.save_leased(leases[0], state(saves=1, consumed=(event_id,)))
    assert await store.events(odd) == []
    info = await store.info(odd)
    assert info is not None and info.instance_id == odd and info.lease_owner == "own\x00er"
    assert await store.terminate(odd, "re\x00ason")
    assert {i.instance_id: i.reason for i in await store.list()} == {
        odd: "re\x00ason", "plain": None}
