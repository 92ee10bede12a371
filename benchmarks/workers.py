#!/usr/bin/env python
"""durable's persistence and worker benchmarks, side by side in one run.

    python benchmarks/workers.py           # full run (about a minute), writes results/workers.json
    python benchmarks/workers.py --quick   # tiny sizes: checks that everything runs

1. the fsync floor of the disk under test (the temp directory);
2. steps per second on one in-process worker with SQLite, at 1, 10 and 100 instances;
3. event round trips to a worker in another process, on SQLite and on PostgreSQL;
4. throughput of 1, 2 and 4 worker processes sharing one PostgreSQL.

PostgreSQL: ``$DURABLE_BENCH_POSTGRES_URL`` if set (a role that may create databases), else a
throwaway server started like the test suite's (tests/postgres_server.py). See
benchmarks/README.md for what each row measures.

This file is also the module the worker processes import (``python -m durable worker
workers``): the durable programs below are found there by ``module:qualname``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib
import importlib.metadata
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import durable
from durable import Client, PauseForEventException, SqliteStateStore, Worker, make_durable
from durable.stores.base import FAILED, FINISHED, TERMINATED, InstanceStore
from durable.stores.sealing import Keyring

try:
    import cryptography  # noqa: F401  (what AesGcmCodec needs: the `encryption` extra)

    from durable.stores.encryption import AesGcmCodec
except ImportError:  # not installed: the encryption rows say so
    AesGcmCodec = None  # type: ignore[assignment,misc]
from durable.stores.urls import redact

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_JSON = HERE / "results" / "workers.json"
URL_VARIABLE = "DURABLE_BENCH_POSTGRES_URL"
ROUND_TRIP_TARGET_MS = 10.0  # p50 of an event round trip on PostgreSQL
STOP_GRACE = 5.0  # seconds a worker process gets to stop after SIGTERM
BENCH_KEY = "the benchmark's key, never a real one"
SIGNING_TARGET = 1.05  # time per step, signed / unsigned


# The workloads. Module level: worker processes import this module to find them.

async def step(i: int) -> int:
    """One trivial durable call: its completion is saved, so each call is one checkpoint."""
    return i


async def steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += await step(i)
    return total


async def record(path: str, i: int) -> None:
    """Note the moment the instance continued after ``ping{i}``: the end of a round trip."""
    with open(path, "a") as log:
        log.write(f"{i} {time.time()!r}\n")


async def ping_loop(n: int, path: str) -> int:
    for i in range(n):
        raise PauseForEventException(f"ping{i}")
        await record(path, i)
    return n


steps_program = make_durable(steps)
ping_program = make_durable(ping_loop)


def workload() -> ModuleType:
    """The programs as module ``workers``, the name the worker processes import them by (run
    as a script, this file is ``__main__``, and a program is found by ``module:qualname``)."""
    if __name__ == "workers":
        return sys.modules[__name__]
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("workers")


@dataclasses.dataclass(frozen=True)
class Config:
    fsync_reps: int = 200  # probes of the disk, after 10 untimed
    steps_per_instance: int = 200  # durable calls of each instance in section 2
    concurrencies: tuple[int, ...] = (1, 10, 100)
    step_reps: int = 5
    step_warmup: int = 1
    round_trips: int = 200
    round_trip_warmup: int = 5  # untimed round trips first (connections, caches)
    fleet_instances: int = 200
    fleet_steps: int = 10
    fleet_workers: tuple[int, ...] = (1, 2, 4)
    fleet_reps: int = 3
    settle: float = 0.5  # seconds idle workers get to connect before a timed fleet run
    timeout: float = 300.0  # for any one wait: a stuck run fails instead of hanging


FULL = Config()
QUICK = Config(fsync_reps=20, steps_per_instance=5, step_reps=1, step_warmup=0, round_trips=20,
               round_trip_warmup=2, fleet_instances=20, fleet_steps=3, fleet_reps=1, settle=0.2,
               timeout=60.0)


# Rows of the report.

@dataclasses.dataclass
class Row:
    id: str
    label: str
    median: float | None  # in ``unit``; for a round trip row, the percentile it names
    min: float | None = None
    max: float | None = None
    unit: str = ""
    target: str = ""
    ok: bool | None = None  # None: informational, no target
    note: str = ""
    values: list[float] = dataclasses.field(default_factory=list)  # every measurement, in unit


def spread(row_id: str, label: str, values: Sequence[float], unit: str, note: str = "") -> Row:
    return Row(row_id, label, statistics.median(values), min(values), max(values), unit,
               note=note, values=list(values))


def unavailable(row_id: str, label: str, why: str) -> Row:
    return Row(row_id, label, None, note=f"unavailable: {why}")


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# 1. The fsync floor.

def fsync_latencies(directory: Path, reps: int) -> list[float]:
    """Seconds per 4 KiB append + fsync: no durable commit on this disk can be faster."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(10 + reps):
            start = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return times[10:]


def sqlite_commit_latencies(directory: Path, reps: int) -> list[float]:
    """Seconds per one-row commit in WAL mode with synchronous=FULL, the store's settings."""
    path = directory / "commit-probe.db"
    connection = sqlite3.connect(path, isolation_level=None)
    times = []
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, data BLOB)")
        block = os.urandom(4096)
        for _ in range(10 + reps):
            start = time.perf_counter()
            connection.execute("INSERT INTO probe (data) VALUES (?)", (block,))
            times.append(time.perf_counter() - start)
    finally:
        connection.close()
    return times[10:]


def bench_floor(directory: Path, cfg: Config) -> tuple[list[Row], float]:
    """Rows 1a-1c, and the floor in steps/s (one step = one commit = at least one fsync)."""
    fsyncs = [t * 1e6 for t in fsync_latencies(directory, cfg.fsync_reps)]
    commits = [t * 1e6 for t in sqlite_commit_latencies(directory, cfg.fsync_reps)]
    floor = 1e6 / statistics.median(fsyncs)
    rows = [
        spread("1a", "write 4 KiB + fsync", fsyncs, "µs"),
        spread("1b", "SQLite commit of one row (WAL, synchronous=FULL)", commits, "µs"),
        Row("1c", "fsync floor: 1 / median 1a", floor, unit="steps/s",
            note="one unbatched step a commit: its best case"),
    ]
    return rows, floor


# Waiting for instances (shared by sections 2-4).

class WorkerDied(RuntimeError):
    pass


async def wait_all_finished(store: InstanceStore, count: int, deadline: float,
                            workers: Sequence[WorkerProcess] = ()) -> None:
    """Return once ``count`` instances finished. Wakes on the store's change signal, so the end
    is seen promptly; fails fast if an instance failed or a worker process died."""
    while True:
        infos = await store.list(limit=count + 1)
        broken = [i for i in infos if i.status in (FAILED, TERMINATED)]
        if broken:
            raise RuntimeError(f"instance {broken[0].instance_id} {broken[0].status}")
        if sum(i.status == FINISHED for i in infos) >= count:
            return
        check_alive(workers)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} instances did not finish in time")
        await store.wait_for_change(0.05)


async def wait_waiting_for(client: Client, instance_id: str, event: str | None, deadline: float,
                           workers: Sequence[WorkerProcess]) -> None:
    """Return once the instance waits for ``event`` (``None``: once it finished)."""
    while True:
        info = await client.status(instance_id)
        if (info.waiting_for == event) if event is not None else info.status == FINISHED:
            return
        if info.status in (FAILED, TERMINATED):
            raise RuntimeError(f"instance {instance_id} {info.status}")
        check_alive(workers)
        if time.monotonic() > deadline:
            raise TimeoutError(f"instance {instance_id} did not reach {event!r} in time "
                               f"(it is {info.status}, waiting for {info.waiting_for!r})")
        await client.store.wait_for_change(0.05)


# 2. Steps per second on one worker, SQLite.

async def one_worker_run(path: Path, instances: int, cfg: Config,
                         sealing: str = "signed") -> tuple[float, int]:
    """Seconds from the worker's start until every instance finished, and the store's commits
    meanwhile. The instances are created before, untimed; the worker runs them all at once.
    ``sealing``: signed (as always), unsigned (to measure what signing costs) or encrypted."""
    program = workload().steps_program
    store = SqliteStateStore(path, secret_key=BENCH_KEY, codec=AesGcmCodec(
        AesGcmCodec.new_key()) if sealing == "encrypted" else None)
    if sealing == "unsigned":
        store.keyring = Keyring([], "the benchmark's unsigned run")
    client = Client(store)
    try:
        ids = [f"steps-{n}" for n in range(instances)]
        await asyncio.gather(*(client.start(program, cfg.steps_per_instance, instance_id=i)
                               for i in ids))
        worker = Worker(store, [program], concurrency=instances, lease_seconds=60.0)
        commits = store.commits
        gc.collect()  # set-up's garbage is not collected inside the timed region
        start = time.perf_counter()
        running = asyncio.create_task(worker.run())
        try:
            await wait_all_finished(store, instances, time.monotonic() + cfg.timeout)
            elapsed = time.perf_counter() - start
            commits = store.commits - commits
        finally:
            worker.stop()
            await running
        expected = sum(range(cfg.steps_per_instance))
        if await client.result(ids[-1], wait=False) != expected:
            raise AssertionError("the steps program returned a wrong result")
    finally:
        await store.close()
    return elapsed, commits


async def bench_one_worker(directory: Path, cfg: Config, floor: float) -> list[Row]:
    """Rows 2a-2i: the instance counts interleaved within each repetition."""
    rates: dict[int, list[float]] = {n: [] for n in cfg.concurrencies}
    per_step: dict[int, list[float]] = {n: [] for n in cfg.concurrencies}
    for rep in range(cfg.step_warmup + cfg.step_reps):
        for instances in cfg.concurrencies:
            path = directory / f"steps-{rep}-{instances}.db"
            elapsed, commits = await one_worker_run(path, instances, cfg)
            total = instances * cfg.steps_per_instance
            if rep >= cfg.step_warmup:
                rates[instances].append(total / elapsed)
                per_step[instances].append(commits / total)
    # What signing and encryption cost where a step's CPU counts most: the most instances.
    most = max(cfg.concurrencies)
    sealed: dict[str, list[float]] = {"unsigned": [], "encrypted": []}
    for rep in range(cfg.step_warmup + cfg.step_reps):
        for sealing in sealed if AesGcmCodec is not None else ["unsigned"]:
            path = directory / f"steps-{rep}-{most}-{sealing}.db"
            elapsed, _ = await one_worker_run(path, most, cfg, sealing)
            if rep >= cfg.step_warmup:
                sealed[sealing].append(most * cfg.steps_per_instance / elapsed)
    rows = []
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for instances in cfg.concurrencies:
        rate = spread(f"2{next(letters)}", f"steps/s, one worker, {instances} instance"
                      f"{'s' if instances > 1 else ''} x {cfg.steps_per_instance} steps (SQLite)",
                      rates[instances], "steps/s")
        rows += [
            rate,
            spread(f"2{next(letters)}", "  commits per step", per_step[instances], "",
                   note="claims and releases included"),
            Row(f"2{next(letters)}", "  steps/s / fsync floor (1c)", rate.median / floor,
                rate.min / floor if rate.min else None, rate.max / floor if rate.max else None,
                "x"),
        ]
    # Time per step relative to the unsigned run: (1 / rate) / (1 / unsigned rate).
    unsigned = statistics.median(sealed["unsigned"])
    signing = unsigned / statistics.median(rates[most])
    rows += [spread(f"2{next(letters)}", f"steps/s, one worker, {most} instances, unsigned "
                    "(SQLite)", sealed["unsigned"], "steps/s"),
             Row(f"2{next(letters)}", "  signing: time per step, signed / unsigned", signing,
                 unit="x", target=f"≤ {SIGNING_TARGET}x", ok=signing <= SIGNING_TARGET,
                 note=f"{signing - 1:+.1%}")]
    if sealed["encrypted"]:
        encryption = unsigned / statistics.median(sealed["encrypted"])
        rows += [spread(f"2{next(letters)}", f"steps/s, one worker, {most} instances, encrypted "
                        "(SQLite)", sealed["encrypted"], "steps/s"),
                 Row(f"2{next(letters)}", "  encryption and signing: time per step, encrypted "
                     "/ unsigned", encryption, unit="x", note=f"{encryption - 1:+.1%}")]
    else:
        rows += [unavailable(f"2{next(letters)}", "steps/s, encrypted", "no cryptography"),
                 unavailable(f"2{next(letters)}", "  encryption: time per step", "no cryptography")]
    return rows


# Worker processes.

@dataclasses.dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def check_alive(workers: Sequence[WorkerProcess]) -> None:
    for worker in workers:
        code = worker.process.poll()
        if code is not None:
            raise WorkerDied(f"a worker process exited with status {code}:\n{worker.tail()}")


def _child_environment() -> dict[str, str]:
    """The children import this module, and the same durable as this process."""
    package_root = str(Path(durable.__file__).resolve().parent.parent)
    paths = [str(HERE), package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@contextlib.contextmanager
def worker_processes(url: str, count: int, directory: Path) -> Iterator[list[WorkerProcess]]:
    """``count`` processes of ``python -m durable worker workers --store URL``. At the end,
    SIGTERM (a clean stop), and SIGKILL if one has not stopped after ``STOP_GRACE`` s (every
    instance has ended by then; a kill is reported)."""
    workers = []
    try:
        for _ in range(count):
            log = directory / f"worker-{uuid.uuid4().hex[:8]}.log"
            with open(log, "wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-m", "durable", "worker", "workers", "--store", url,
                     "--log-level", "INFO"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    cwd=HERE, env=_child_environment())
            workers.append(WorkerProcess(process, log))
        yield workers
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.terminate()
        for worker in workers:
            try:
                worker.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                progress(f"a worker process did not stop {STOP_GRACE:g} s after SIGTERM: killed")
                worker.process.kill()
                worker.process.wait()


async def wait_started(workers: Sequence[WorkerProcess], deadline: float) -> None:
    """Return once every worker logged that it runs (its claim loop starts right after)."""
    while not all("started on" in _read(w.log) for w in workers):
        check_alive(workers)
        if time.monotonic() > deadline:
            raise TimeoutError("the worker processes did not start in time")
        await asyncio.sleep(0.02)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# 3. Event round trips.

async def round_trips(url: str, directory: Path, cfg: Config) -> list[float]:
    """Milliseconds from just before ``publish_event`` to the moment the instance, run by a
    worker in another process, continued past its pause (``record`` noted the time)."""
    records = directory / f"pings-{uuid.uuid4().hex[:8]}.log"
    total = cfg.round_trip_warmup + cfg.round_trips
    instance_id = f"pings-{uuid.uuid4().hex[:8]}"
    sent: list[float] = []
    async with Client(url) as client:
        await client.start(workload().ping_program, total, str(records), instance_id=instance_id)
        with worker_processes(url, 1, directory) as workers:
            deadline = time.monotonic() + cfg.timeout
            for i in range(total):
                await wait_waiting_for(client, instance_id, f"ping{i}", deadline, workers)
                sent.append(time.time())
                await client.publish_event(instance_id, f"ping{i}")
            await wait_waiting_for(client, instance_id, None, deadline, workers)
    continued = {int(i): float(t) for i, t in
                 (line.split() for line in records.read_text().splitlines())}
    return [(continued[i] - sent[i]) * 1e3 for i in range(cfg.round_trip_warmup, total)]


def round_trip_rows(ids: tuple[str, str], store: str, latencies: list[float] | None,
                    why: str, target: bool) -> list[Row]:
    p50_label = f"event round trip, {store}, p50 (worker in another process)"
    p99_label = f"event round trip, {store}, p99"
    if latencies is None:
        return [unavailable(ids[0], p50_label, why), unavailable(ids[1], p99_label, why)]
    p50 = Row(ids[0], p50_label, percentile(latencies, 50), min(latencies), max(latencies), "ms",
              note=f"{len(latencies)} round trips", values=latencies)
    if target:
        p50.target = f"< {ROUND_TRIP_TARGET_MS:g} ms"
        p50.ok = p50.median is not None and p50.median < ROUND_TRIP_TARGET_MS
    return [p50, Row(ids[1], p99_label, percentile(latencies, 99), unit="ms")]


# 4. Worker processes on one PostgreSQL.

async def fleet_run(url: str, workers: int, directory: Path, cfg: Config) -> float:
    """Seconds from the first start to the last finish, ``workers`` processes already idle and
    connected; the instances are started by this process once the clock runs."""
    program = workload().steps_program
    async with Client(url) as client:
        await client.list(limit=1)  # the schema exists before the workers race to create it
        with worker_processes(url, workers, directory) as processes:
            await wait_started(processes, time.monotonic() + cfg.timeout)
            await asyncio.sleep(cfg.settle)
            gc.collect()  # set-up's garbage is not collected inside the timed region
            start = time.perf_counter()
            await asyncio.gather(*(client.start(program, cfg.fleet_steps, instance_id=f"fleet-{n}")
                                   for n in range(cfg.fleet_instances)))
            await wait_all_finished(client.store, cfg.fleet_instances,
                                    time.monotonic() + cfg.timeout, processes)
            return time.perf_counter() - start


async def bench_fleet(admin_url: str | None, why: str, directory: Path, cfg: Config) -> list[Row]:
    """Rows 4a-4d; each run on a fresh database, the worker counts interleaved per repetition."""
    labels = [f"steps/s, {n} worker process{'es' if n > 1 else ''} on one PostgreSQL "
              f"({cfg.fleet_instances} instances x {cfg.fleet_steps} steps)"
              for n in cfg.fleet_workers]
    ratio_label = f"{cfg.fleet_workers[-1]} worker processes / 1"
    ids = [f"4{chr(ord('a') + n)}" for n in range(len(cfg.fleet_workers) + 1)]
    if admin_url is None:
        return [unavailable(i, label, why) for i, label in zip(ids, [*labels, ratio_label],
                                                                strict=True)]
    rates: dict[int, list[float]] = {n: [] for n in cfg.fleet_workers}
    for _ in range(cfg.fleet_reps):
        for count in cfg.fleet_workers:
            with fresh_database(admin_url) as url:
                elapsed = await fleet_run(url, count, directory, cfg)
            rates[count].append(cfg.fleet_instances * cfg.fleet_steps / elapsed)
    rows = [spread(i, label, rates[n], "steps/s")
            for i, label, n in zip(ids, labels, cfg.fleet_workers, strict=False)]
    first, last = rates[cfg.fleet_workers[0]], rates[cfg.fleet_workers[-1]]
    ratios = [b / a for a, b in zip(first, last, strict=True)]
    rows.append(spread(ids[-1], ratio_label, ratios, "x",
                       note="per repetition, the runs side by side"))
    return rows


# PostgreSQL for the benchmark.

@dataclasses.dataclass
class Postgres:
    admin_url: str | None  # None: unavailable, ``why`` says why
    why: str
    version: str


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """``$DURABLE_BENCH_POSTGRES_URL``, else a throwaway server like the test suite's; never
    raises for a missing server: the PostgreSQL rows then say why."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield Postgres(None, "psycopg is not installed (pip install -e '.[postgres]')", "")
        return
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield checked(given, URL_VARIABLE)
        return
    with local_server() as (url, why):
        yield checked(url, "a throwaway server") if url else Postgres(None, why, "")


@contextlib.contextmanager
def local_server() -> Iterator[tuple[str | None, str]]:
    """(URL, "") of a server started from the installed binaries, stopped afterwards, by the
    test suite's own code; (None, why) if there is none."""
    try:
        postgres_server = _test_server_module()
        import pytest
    except ImportError as error:
        yield None, f"cannot import tests/postgres_server.py ({error})"
        return
    bindir = postgres_server.find_bindir()
    if bindir is None:
        yield None, f"no PostgreSQL server binaries (initdb, pg_ctl) and {URL_VARIABLE} not set"
        return
    try:
        server = postgres_server.LocalServer(bindir)
        server.start()
    except (Exception, pytest.fail.Exception) as error:  # it reports with pytest.fail
        yield None, f"the throwaway server did not start: {str(error).strip()[:300]}"
        return
    try:
        yield server.url, ""
    finally:
        server.stop()


def _test_server_module() -> ModuleType:
    """tests/postgres_server.py, imported without leaving tests/ on the path."""
    tests = str(REPO / "tests")
    sys.path.insert(0, tests)
    try:
        return importlib.import_module("postgres_server")
    finally:
        sys.path.remove(tests)


def checked(url: str, origin: str) -> Postgres:
    """The server behind ``url`` if it answers and lets us create databases."""
    import psycopg

    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        return Postgres(None, f"{origin} is not a postgresql:// URL", "")
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
        with fresh_database(url):
            pass
    except psycopg.Error as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Postgres(None, f"{redact(url)}: {message}", "")
    return Postgres(url, "", str(version))


@contextlib.contextmanager
def fresh_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new, empty database on the server for one run (no rows or bloat from the last one);
    or a copy of the database ``template`` names."""
    import psycopg
    from psycopg import sql

    name = f"durable_bench_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(urlsplit(template).path[1:]))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(create)
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


# Environment, output.

def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(pg: Postgres, directory: Path) -> dict[str, Any]:
    """run.py's header (Python, platform, CPU, load, durable and its commit), plus the stores'."""
    import run

    env = run.environment()
    env.pop("duravoke", None)
    env.update({
        "psycopg": _version("psycopg"),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg.version or f"unavailable: {pg.why}",
        "disk_under_test": str(directory.parent),
    })
    return env


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    text = (f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 100
            else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}")
    return f"{text}x" if unit == "x" else f"{text} {unit}".rstrip()


def render(rows: list[Row]) -> str:
    header = ("#", "measurement", "median", "min", "max", "target", "")
    lines = [(r.id, r.label, _format(r.median, r.unit), _format(r.min, r.unit),
              _format(r.max, r.unit), r.target,
              {True: "ok", False: "MISSED", None: ""}[r.ok] + (f"  {r.note}" if r.note else ""))
             for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(6)]
    out = []
    for line in [header, *lines]:
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1]),
                 *(line[i].rjust(widths[i]) for i in (2, 3, 4)), line[5].ljust(widths[5]), line[6]]
        out.append("  ".join(cells).rstrip())
        if line is header:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def print_header(env: dict[str, Any], quick: bool, elapsed: float) -> None:
    print(f"Python {env['python']} ({env['implementation']}) on {env['platform']}, "
          f"{env['cpu']}, {env['cpu_count']} CPUs ({env['cpus_usable']} usable), "
          f"load {env['load_average']}")
    print(f"durable {env['durable']} ({env['durable_commit']}), psycopg {env['psycopg']}, "
          f"cloudpickle {env['cloudpickle']}, libcst {env['libcst']}")
    print(f"SQLite {env['sqlite']}, PostgreSQL {env['postgresql']}; "
          f"stores in {env['disk_under_test']}")
    print(f"mode: {'quick (numbers not meaningful)' if quick else 'full'}; "
          f"median, min and max over repetitions; took {elapsed:.1f} s")
    load = env["load_average"]
    if load and env["cpus_usable"] and load[0] >= 0.5 * env["cpus_usable"]:
        print(f"WARNING: the machine was busy (load {load[0]:.2f} on {env['cpus_usable']} CPUs "
              "when the run started): numbers are pessimistic; rerun when it is quiet")


def print_floor(rows: list[Row]) -> None:
    fsync, commit, floor = rows
    print(f"fsync floor of the disk under test: write 4 KiB + fsync {_format(fsync.median, 'µs')}"
          f" (median), one SQLite commit {_format(commit.median, 'µs')}: at most "
          f"{_format(floor.median, 'steps/s')} one commit at a time")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_all(cfg: Config, directory: Path, pg: Postgres) -> list[Row]:
    progress("measuring the fsync floor ...")
    rows, floor = bench_floor(directory, cfg)
    progress("steps per second on one worker (SQLite) ...")
    rows += await bench_one_worker(directory, cfg, floor)
    progress("event round trips (SQLite) ...")
    url = f"sqlite:///{directory / 'round-trips.db'}"
    rows += round_trip_rows(("3a", "3b"), "SQLite", await round_trips(url, directory, cfg), "",
                            target=False)
    progress("event round trips (PostgreSQL) ...")
    latencies = None
    if pg.admin_url is not None:
        with fresh_database(pg.admin_url) as url:
            latencies = await round_trips(url, directory, cfg)
    rows += round_trip_rows(("3c", "3d"), "PostgreSQL", latencies, pg.why, target=True)
    progress("worker processes on one PostgreSQL ...")
    rows += await bench_fleet(pg.admin_url, pg.why, directory, cfg)
    return rows


def write_json(path: Path, cfg: Config, quick: bool, env: dict[str, Any], rows: list[Row],
               elapsed: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    floor = {"fsync_us": rows[0].median, "sqlite_commit_us": rows[1].median,
             "steps_per_second": rows[2].median}
    path.write_text(json.dumps({
        "mode": "quick" if quick else "full",
        "config": dataclasses.asdict(cfg),
        "environment": env,
        "fsync_floor": floor,
        "rows": [dataclasses.asdict(r) for r in rows],
        "targets_missed": [r.id for r in rows if r.ok is False],
        "seconds": elapsed,
    }, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DURABLE_SECRET_KEY", BENCH_KEY)  # PostgreSQL, and the workers' too
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO)})")
    options = parser.parse_args(argv)
    cfg = QUICK if options.quick else FULL

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="durable-bench-workers-") as temporary, \
            postgres() as pg:
        directory = Path(temporary)
        env = environment(pg, directory)
        rows = asyncio.run(run_all(cfg, directory, pg))
    elapsed = time.perf_counter() - started
    if options.quick:  # sizes too small for the target to mean anything
        for row in rows:
            if row.ok is not None:
                row.ok, row.note = None, f"{row.note}; not judged in quick mode".lstrip("; ")

    print_header(env, options.quick, elapsed)
    print_floor(rows[:3])
    print()
    print(render(rows))
    write_json(options.json, cfg, options.quick, env, rows, elapsed)
    print(f"\nwrote {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
