"""What the SQL core guarantees on every database: its group-commit writer survives callers
that go away and its own death, and one lease rule holds.

The rest of what SQLite and PostgreSQL share is in the conformance suite
(test_instance_stores.py); migrations of stores written by earlier releases are in
test_releases.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from durable import SqliteStateStore, StoreError
from durable.runtime import envelope
from durable.stores import open_store
from durable.stores.sql import SqlStore

PROGRAM = "m:main"
PATIENCE = 10.0  # seconds a write that should go through may take; far more than it needs


def state(marker: int) -> dict[str, Any]:
    saved = envelope.envelope(PROGRAM, envelope.RUNNING, [b"frame"], saves=marker)
    saved["marker"] = marker
    return saved


class Database:
    """A store of one kind, and a second connection that can hold an instance's row so the
    store's writer waits for it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = tmp_path / "durable.db"
            self.store: SqlStore = SqliteStateStore(self.path)
        else:
            self.dsn = request.getfixturevalue("postgres_dsn")
            self.store = open_store(self.dsn)

    @contextlib.contextmanager
    def holding(self, instance_id: str) -> Iterator[None]:
        """While inside, a write of ``instance_id`` waits: SQLite's write lock, PostgreSQL's
        row lock, taken by another connection."""
        if self.kind == "sqlite":
            other = sqlite3.connect(self.path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
        else:
            other = psycopg.connect(self.dsn)
            other.execute("SELECT 1 FROM durable_instances WHERE id = %s FOR UPDATE", (instance_id,))
        try:
            yield
        finally:
            other.execute("COMMIT")
            other.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request, tmp_path) -> Any:
    database = Database(request.param, request, tmp_path)
    yield database
    await database.store.close()


async def markers(store: SqlStore, *ids: str) -> list[int]:
    return [(await store.load(instance_id))["marker"] for instance_id in ids]


async def test_writes_whose_callers_are_cancelled_are_skipped_and_the_writer_goes_on(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """A worker cancels an instance's task when its lease is lost or it stops now: its queued
    save must not run, and must not kill the writer (every later write would hang)."""
    store = db.store
    for instance_id in ("held", "a", "b", "c"):
        await store.create(instance_id, state(0))
    with db.holding("held"):
        first = asyncio.create_task(store.save("held", state(1)))
        await asyncio.sleep(0.3)  # the writer now waits for the other connection
        queued = [asyncio.create_task(store.save(i, state(1))) for i in ("a", "b", "c")]
        await asyncio.sleep(0.1)
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
    await asyncio.wait_for(first, PATIENCE)
    await asyncio.wait_for(store.save("a", state(2)), PATIENCE)  # the writer lives
    assert await markers(store, "held", "a", "b", "c") == [1, 2, 0, 0]  # b and c never ran
    del first, queued
    gc.collect()
    assert "never retrieved" not in caplog.text


def kill(thread: Any) -> None:
    """Raise SystemExit in ``thread`` the next time it runs Python code."""
    killed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                        ctypes.py_object(SystemExit))
    assert killed == 1


async def test_a_writer_that_dies_is_reported_and_replaced(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    store = db.store
    await store.create("held", state(0))
    with db.holding("held"):
        dying = asyncio.create_task(store.save("held", state(1)))
        await asyncio.sleep(0.3)  # the writer waits for the other connection, in its transaction
        kill(store._writer._thread)  # it dies once the wait is over
        queued = asyncio.create_task(store.save("queued", state(1)))
        await asyncio.sleep(0.1)
    with caplog.at_level(logging.ERROR, logger="durable.store"):
        with pytest.raises(StoreError, match="writer died"):
            await asyncio.wait_for(dying, PATIENCE)
        await asyncio.wait_for(queued, PATIENCE)  # a new writer took the queue over
        await asyncio.wait_for(store.save("after", state(2)), PATIENCE)
    assert "writer" in caplog.text and "died" in caplog.text
    # The dead writer's transaction was rolled back; the others committed.
    assert await markers(store, "held", "queued", "after") == [0, 1, 2]


async def test_readers_that_die_are_reported_and_replaced(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    store = db.store
    await store.create("a", state(0))

    def die(connection: Any) -> None:
        raise SystemExit("killed")  # ends the thread that runs it

    with caplog.at_level(logging.ERROR, logger="durable.store"):
        deaths = await asyncio.gather(*(store._query(die) for _ in range(store._readers.count)),
                                      return_exceptions=True)
        assert all(isinstance(death, StoreError) and "reader died" in str(death)
                   for death in deaths)
        loads = [store.load("a") for _ in range(2 * store._readers.count)]
        assert [saved["marker"] for saved in await asyncio.wait_for(
            asyncio.gather(*loads), PATIENCE)] == [0] * len(loads)
    assert "reader" in caplog.text and "died" in caplog.text


async def test_a_lease_has_expired_at_its_expiry_time(tmp_path, monkeypatch) -> None:
    """One rule on every database: a lease is held until it expires, not at that moment."""
    store = SqliteStateStore(tmp_path / "durable.db")  # its clock can be stopped here
    try:
        await store.create("i", state(0))
        monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
        [first] = await store.claim("first", [PROGRAM], 1, 0)  # expires at once: now
        [second] = await store.claim("second", [PROGRAM], 1, 30)  # the same moment
        assert second.token == first.token + 1
    finally:
        monkeypatch.undo()
        await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_one_store_serves_many_event_loops_and_threads(kind, request, tmp_path) -> None:
    store = Database(kind, request, tmp_path).store  # no loop runs: nothing connects yet
    assert asyncio.run(store.create("a", state(0)))
    asyncio.run(store.save("a", state(1)))
    loaded: list[dict] = []
    thread = threading.Thread(target=lambda: loaded.append(asyncio.run(store.load("a"))))
    thread.start()
    thread.join()
    assert loaded[0]["marker"] == 1
    assert asyncio.run(store.claim("w", [PROGRAM], 1, 30))[0].instance_id == "a"
    asyncio.run(store.close())
    with pytest.raises(StoreError, match="closed"):
        asyncio.run(store.load("a"))
    with pytest.raises(StoreError, match="closed"):
        store.append_event("a", "go")


def test_processes_opening_a_new_sqlite_file_at_once_all_open_it(tmp_path) -> None:
    """Switching a new file to WAL needs it to oneself; SQLite does not wait for that."""
    path = tmp_path / "new.db"
    code = "import sys\nfrom durable import SqliteStateStore\nSqliteStateStore(sys.argv[1])\n"
    openers = [subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE,
                                text=True) for _ in range(8)]
    failures = [opener.communicate(timeout=60)[1] for opener in openers if opener.wait(60)]
    assert not failures, failures[0]
