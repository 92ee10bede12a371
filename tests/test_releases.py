"""Stores written by earlier releases open, migrate in place and run with today's code.

releases/ keeps a store of each kind as a release wrote it (make.py says how): a
SQLite file, and a PostgreSQL dump. Each holds the same instances of
release_program in every situation a deploy can meet. Opened by today's store,
the schema is migrated to exactly what a new store gets, every instance shows
what it showed before, and every unfinished one runs to its end.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import running
from postgres_server import with_database
from psycopg import sql
from release_program import PROGRAMS

from durable import Client, InstanceTerminated, Worker
from durable.stores import InstanceStore, open_store
from durable.stores.sql.schema import SCHEMA_VERSION
from durable.testing import VirtualClock

RELEASES = Path(__file__).resolve().parent / "releases"
TIMEOUT = 30.0


@contextlib.contextmanager
def new_database(server: str) -> Iterator[str]:
    name = f"durable_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The URL of a store a release wrote (a copy of it), and of a new, empty one."""
    if request.param == "sqlite":
        shutil.copy(RELEASES / "sqlite-schema2.db", tmp_path / "released.db")
        yield f"sqlite:///{tmp_path / 'released.db'}", f"sqlite:///{tmp_path / 'new.db'}"
        return
    released = request.getfixturevalue("postgres_dsn")
    dump = (RELEASES / "postgres-schema2.sql").read_text()
    # psql's meta-commands (\restrict) are not SQL; the rest is what psql would send.
    script = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
    with psycopg.connect(released, autocommit=True) as connection:
        connection.execute(script)
    with new_database(request.getfixturevalue("postgres_url")) as new:
        yield released, new


def schema(url: str) -> dict[str, Any]:
    """Tables with their columns, indexes with their definitions, and the schema version."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            tables = [name for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            return {
                "columns": {table: db.execute(f"PRAGMA table_info({table})").fetchall()
                            for table in tables},
                "indexes": db.execute("SELECT name, tbl_name, sql FROM sqlite_master"
                                      " WHERE type = 'index' ORDER BY name").fetchall(),
                "version": db.execute("SELECT version FROM durable_schema").fetchall()}
    with psycopg.connect(url) as db:
        return {
            "columns": db.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns WHERE table_schema = current_schema()"
                " ORDER BY table_name, ordinal_position").fetchall(),
            "indexes": db.execute("SELECT indexname, indexdef FROM pg_indexes"
                                  " WHERE schemaname = current_schema() ORDER BY indexname"
                                  ).fetchall(),
            "version": db.execute("SELECT version FROM durable_schema").fetchall()}


async def touch(url: str) -> None:
    """Open a store and use it (that is what migrates it)."""
    store = open_store(url)
    try:
        await store.load("nobody")
    finally:
        await store.close()


async def test_a_released_store_migrates_to_the_schema_of_a_new_one(urls) -> None:
    released, new = urls
    before = schema(released)
    assert before["version"] == [(2,)]
    await touch(released)
    await touch(new)
    migrated = schema(released)
    assert migrated["version"] == [(SCHEMA_VERSION,)]
    assert migrated == schema(new)
    await touch(released)  # a second opening changes nothing
    assert schema(released) == migrated


async def test_every_instance_of_a_released_store_shows_what_it_did_and_runs_to_its_end(
        urls) -> None:
    store = open_store(urls[0])
    assert isinstance(store, InstanceStore)
    client = Client(store)
    try:
        infos = {info.instance_id: info for info in await client.list()}
        assert {i: (info.program.split(":")[1], info.status, info.waiting_for)
                for i, info in infos.items()} == {
            "waiting": ("order", "waiting", "approve"),
            "event-pending": ("order", "waiting", "approve"),
            "suspended": ("order", "suspended", "approve"),
            "timer": ("reminder", "waiting", None),
            "stale-lease": ("order", "running", None),
            "never-run": ("order", "running", None),
            "finished": ("order", "finished", None),
            "failed": ("explode", "failed", None),
            "terminated": ("order", "terminated", None)}
        assert infos["stale-lease"].lease_owner == "dead-worker"
        assert infos["terminated"].reason == "customer left"
        assert infos["timer"].wake_at is not None
        assert await client.custom_status("waiting") == {"total": 3}
        assert await client.result("finished") == "cid: 1 approved by carol"
        with pytest.raises(ValueError, match="gus is refused"):
            await client.result("failed")
        with pytest.raises(InstanceTerminated, match="customer left"):
            await client.result("terminated")

        # Today's worker runs them: the dead worker's lease has long expired, the timer is due.
        worker = Worker(store, PROGRAMS, poll_interval=0.05,
                        clock=VirtualClock(time.time() + 3600))
        async with running(worker):
            assert await client.result("event-pending", timeout=TIMEOUT) == \
                "bob: 6 approved by dan"
            assert await client.result("timer", timeout=TIMEOUT) == "reminded fay"
            for instance_id in ("waiting", "stale-lease", "never-run"):
                await client.wait_for_status(instance_id, "waiting", timeout=TIMEOUT)
                await client.publish_event(instance_id, "approve", "zoe")
            assert await client.resume("suspended")
            await client.publish_event("suspended", "approve", "yan")
            assert [await client.result(i, timeout=TIMEOUT) for i in (
                "waiting", "stale-lease", "never-run", "suspended")] == [
                "ann: 3 approved by zoe", "hal: 0 approved by zoe", "ida: 10 approved by zoe",
                "eve: 1 approved by yan"]
        assert {info.status for info in await client.list()} == {"finished", "failed",
                                                                 "terminated"}
        for instance_id in infos:
            assert await store.events(instance_id) == []
    finally:
        await store.close()
