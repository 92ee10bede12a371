"""Store outages: a worker process gives back what it could not, as soon as the store answers
again; a client never hangs on a store that does not answer.

Real processes throughout: a worker started with ``python -m durable worker``,
a PostgreSQL server of this module's own (stopped with pg_ctl for ten seconds,
or frozen with SIGSTOP), and a SQLite store on a small tmpfs filled until its
writes fail. Leases are a minute long and every wait after the store is back
is at most 20 s: instances that finish within it did not wait for their leases
to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from harness import eventually
from postgres_server import LocalServer, find_bindir, with_database

from durable import Client
from durable.errors import StoreError
from durable.stores import open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STEPS = 20
EXPECTED = sum(range(STEPS))
AFTER_RETURN = 20.0  # seconds the instances get to finish once the store is back (leases: 60)

PROGRAM = textwrap.dedent('''
    import asyncio
    import os

    from durable import make_durable

    LOG = os.environ["DURABLE_OUTAGE_LOG"]


    async def work(instance, step):
        await asyncio.sleep(0.1)
        with open(LOG, "a") as log:
            log.write(f"{instance} {step}\\n")
        return step


    async def job(instance, steps, ballast):
        kept = []  # saved with every state: the state grows by ``ballast`` bytes a step
        total = 0
        for step in range(steps):
            kept.append(os.urandom(ballast))
            total += await work(instance, step)
        return total


    job_program = make_durable(job)
''')


@pytest.fixture(scope="module")
def own_postgres():
    """A PostgreSQL server for this module alone: its tests stop and freeze it."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("the outage tests need the PostgreSQL server binaries (initdb, pg_ctl) to "
                    "start a server of their own", pytrace=False)
    server = LocalServer(bindir)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            for pid in server.processes():
                os.kill(pid, signal.SIGCONT)
        server.stop()


def fresh_database(server: LocalServer) -> str:
    """The URL of a new, empty database on ``server``."""
    import psycopg

    name = f"durable_outage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return with_database(server.url, name)


@pytest.fixture
def program(tmp_path, monkeypatch):
    """The job program, importable here and in worker processes; returns it and its log."""
    (tmp_path / "outage_program.py").write_text(PROGRAM)
    log = tmp_path / "steps.log"
    monkeypatch.setenv("DURABLE_OUTAGE_LOG", str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("outage_program", None)
    import outage_program
    return outage_program.job_program, log


@contextlib.contextmanager
def worker_process(store_url: str, cwd: Path):
    """``durable worker`` on the job program, stopped with SIGTERM at the end; yields its log."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT)]))
    log = cwd / "worker.log"
    with open(log, "w") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "durable", "worker", "outage_program", "--store", store_url,
             "--concurrency", "100", "--lease-seconds", "60"],
            env=env, cwd=cwd, stderr=stderr, text=True)
    try:
        yield log
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def log_lines(log: Path) -> int:
    return log.read_text().count("\n") if log.exists() else 0


def check_steps(log: Path, ids: list[str], worker_log: Path) -> None:
    """Every step of every instance ran; one ran twice at most per instance (the one whose
    save the outage refused: unsaved work runs again), and none three times."""
    runs = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    assert set(runs) == {(i, str(step)) for i in ids for step in range(STEPS)}
    again = Counter(instance for (instance, _), count in runs.items() if count > 1)
    assert max(runs.values()) <= 2, (runs.most_common(3), worker_log.read_text()[-3000:])
    assert max(again.values(), default=0) <= 1, again


async def test_a_postgresql_outage_delays_instances_only_until_it_is_back(
        own_postgres, opened, program, tmp_path) -> None:
    job_program, log = program
    url = fresh_database(own_postgres)
    store = opened(url)
    client = Client(store)
    ids = [f"job-{n}" for n in range(50)]
    for instance in ids:
        await client.start(job_program, instance, STEPS, 16, instance_id=instance)
    with worker_process(url, tmp_path) as worker_log:
        await eventually(lambda: log_lines(log) >= 100, 120, "the instances run")
        own_postgres.halt()
        stopped = time.monotonic()
        during = Client(opened(url), timeout=2)
        asked = time.monotonic()
        with pytest.raises(StoreError):
            await during.status(ids[0])
        assert time.monotonic() - asked < 15  # the configured 2 s, loosely
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        own_postgres.resume()

        async def all_finished() -> bool:
            with contextlib.suppress(StoreError):
                return len(await store.list(status="finished", limit=100)) == len(ids)
            return False
        await eventually(all_finished, AFTER_RETURN, "every instance finishes after the outage")
    assert [await client.result(i, wait=False) for i in ids] == [EXPECTED] * len(ids)
    check_steps(log, ids, worker_log)
    assert "cannot give its lease back" in worker_log.read_text()  # the outage was felt


async def test_a_hung_postgresql_fails_client_calls_within_their_timeout(
        own_postgres, opened, program) -> None:
    job_program, _ = program
    client = Client(opened(fresh_database(own_postgres)), timeout=2)
    await client.start(job_program, "hung", STEPS, 16, instance_id="hung")
    await client.status("hung")  # a connection is open
    frozen = own_postgres.processes()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        asked = time.monotonic()
        with pytest.raises(StoreError, match="did not answer within 2 s"):
            # Bounded here, too, so that a client that hangs fails the test instead of hanging it.
            await asyncio.wait_for(client.status("hung"), 60)
        assert time.monotonic() - asked < 15  # the configured 2 s, loosely
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert (await client.status("hung")).status == "running"  # it answers again


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str):
    """A tmpfs of ``size`` mounted at ``where`` (needs root; a failure to mount fails the test)."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"the full-disk test needs a small tmpfs (mount -t tmpfs, as root): "
                    f"{done.stderr.strip() or done.returncode}", pytrace=False)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the disk is full; return it."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


async def test_a_full_disk_loses_nothing_and_instances_finish_when_space_returns(
        program, tmp_path) -> None:
    job_program, log = program
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        url = f"sqlite:///{disk / 'durable.db'}"
        store = open_store(url)
        try:
            client = Client(store)
            ids = [f"job-{n}" for n in range(20)]
            for instance in ids:
                await client.start(job_program, instance, STEPS, 8192, instance_id=instance)
            with worker_process(url, tmp_path) as worker_log:
                await eventually(lambda: log_lines(log) >= 40, 120, "the instances run")
                filler = fill(disk)
                await eventually(lambda: "the store failed" in worker_log.read_text(), 60,
                                 "the worker's saves fail")
                await asyncio.sleep(2)  # the disk stays full a while: writes go on failing
                # The store still reads: every instance's last saved state loads.
                for instance in ids:
                    assert (await client.status(instance)).status in {"running", "finished"}
                    assert (await store.load(instance))["status"] in {"running", "finished"}
                filler.unlink()

                async def all_finished() -> bool:
                    return len(await store.list(status="finished", limit=100)) == len(ids)
                await eventually(all_finished, AFTER_RETURN,
                                 "every instance finishes after space returns")
            assert [await client.result(i, wait=False) for i in ids] == [EXPECTED] * len(ids)
            check_steps(log, ids, worker_log)
            assert "cannot give its lease back" in worker_log.read_text()  # the disk was full
        finally:
            await store.close()
        with contextlib.closing(sqlite3.connect(disk / "durable.db")) as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
