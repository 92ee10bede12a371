"""DBOS (package ``dbos``) as a peer, with a SQLite or a PostgreSQL system database.

DBOS records each step's output in its system database (one committed transaction per step)
and recovers a workflow by running its function again from the top, each completed step
returning its recorded output instead of running. Workflows and steps are registered by name
when this module is imported, before ``DBOS(config=...)`` exists, as DBOS allows; each
measurement runs in a process of its own, so the ``DBOS`` singleton is built and destroyed
once per process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dbos import DBOS, DBOSClient, DBOSConfig, SetWorkflowID

from .base import READY, Peer, append_line, start_clock

RECOVERED_ID = "bench-recover"  # prepare's workflow, which recover finds again
SERVED_ID = "bench-serve"  # serve's workflow, to which publish sends
WAIT = 600.0  # seconds one recv waits, as long as peer.py's round-trip timeout


@DBOS.step()
def echo(value: int) -> int:
    """The trivial step."""
    return value


@DBOS.workflow()
def run_steps(n: int) -> int:
    return sum(echo(i) for i in range(n))


@DBOS.workflow()
def hold(m: int, n: int) -> int:
    data = list(range(m))  # stays alive across every step
    return sum(echo(i) for i in range(n)) + len(data)


@dataclass
class _Probe:
    """What the recovery step reads and writes: the step at which the preparing process dies,
    the step the recovering process watches for, and when (and how often) bodies ran."""

    crash_at: int = -1
    watch_at: int = -1
    began: float = 0.0
    executed: int = 0
    reached: threading.Event = field(default_factory=threading.Event)


_probe = _Probe()


@DBOS.step()
def probed(i: int) -> int:
    """A trivial step that counts its real executions (a replayed step's body does not run)."""
    _probe.executed += 1
    if i == _probe.crash_at:
        os._exit(0)  # the preparing process dies here, as if killed
    if i == _probe.watch_at:
        _probe.began = time.perf_counter()
        _probe.reached.set()
    return i


@DBOS.workflow()
def crashing(n: int) -> int:
    return sum(probed(i) for i in range(n))


@DBOS.workflow()
def waiter(count: int, marks: str) -> int:
    path = Path(marks)
    append_line(path, READY)  # the next statement waits
    for index in range(count):
        message = DBOS.recv(topic=f"e{index}", timeout_seconds=WAIT)
        append_line(path, repr(time.time()))
        if message != index:
            raise RuntimeError(f"recv e{index} returned {message!r}")
    return count


class _Dbos(Peer):
    """DBOS in this process; the subclasses only say where its system database is."""

    label = "DBOS"

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        super().__init__(directory, database_url)
        self._client: DBOSClient | None = None

    def system_database_url(self) -> str:
        raise NotImplementedError

    def _config(self) -> DBOSConfig:
        # No conductor key and no OTLP endpoints: nothing leaves the machine (DBOS 3.4 has no
        # admin server any more). The system database URL is the only connection.
        return {
            "name": "durable-bench",
            "system_database_url": self.system_database_url(),
            "enable_otlp": False,
            "log_level": "WARNING",
        }

    @contextmanager
    def _launched(self) -> Iterator[None]:
        """DBOS started (which recovers this executor's pending workflows) and destroyed."""
        DBOS(config=self._config())
        DBOS.launch()
        try:
            yield
        finally:
            DBOS.destroy()

    def steps(self, n: int) -> float:
        with self._launched():
            run_steps(3)  # warm-up, untimed: measure a process at work, not one starting
            start = start_clock()
            total = run_steps(n)
            elapsed = time.perf_counter() - start
        _check(total, n * (n - 1) // 2)
        return elapsed

    def prepare(self, k: int) -> None:
        _probe.crash_at = k  # steps 0..k-1 complete, step k (the k+1st) kills the process
        with self._launched(), SetWorkflowID(RECOVERED_ID):
            crashing(k + 1)
        raise RuntimeError("the workflow ended instead of dying at its last step")

    def recover(self, k: int) -> float:
        _probe.watch_at = k
        start = start_clock()
        with self._launched():
            if not _probe.reached.wait(WAIT):
                raise TimeoutError(f"launch did not resume {RECOVERED_ID} within {WAIT} s")
            elapsed = _probe.began - start
            total = DBOS.retrieve_workflow(RECOVERED_ID).get_result()
        _check(total, k * (k + 1) // 2)
        _check(_probe.executed, 1)  # only step k+1 ran: the k before it were replayed
        return elapsed

    def serve(self, count: int, marks: Path) -> None:
        with self._launched(), SetWorkflowID(SERVED_ID):
            received = waiter(count, str(marks))
        _check(received, count)

    def publish(self, index: int) -> None:
        # A client writes to the system database only: it runs no executor, so it cannot
        # recover or take over the served workflow.
        if self._client is None:
            self._client = DBOSClient(system_database_url=self.system_database_url())
        self._client.send(SERVED_ID, index, topic=f"e{index}")

    def holding(self, m: int, n: int) -> float:
        with self._launched():
            run_steps(3)  # warm-up, untimed: measure a process at work, not one starting
            start = start_clock()
            total = hold(m, n)
            elapsed = time.perf_counter() - start
        _check(total, n * (n - 1) // 2 + m)
        return elapsed / n

    def throughput(self, instances: int, steps: int) -> float:
        # DBOS.start_workflow is how DBOS runs workflows concurrently in this process: each
        # gets a thread of DBOS's executor pool at once. (A Queue adds flow control and
        # distribution across processes, and its dispatcher polls the database.)
        with self._launched():
            run_steps(3)  # warm-up, untimed: measure a process at work, not one starting
            start = start_clock()
            handles = [DBOS.start_workflow(run_steps, steps) for _ in range(instances)]
            totals = [handle.get_result() for handle in handles]
            elapsed = time.perf_counter() - start
        _check(totals, [steps * (steps - 1) // 2] * instances)
        return instances * steps / elapsed


class DbosSqlite(_Dbos):
    store = "SQLite"
    # DBOS sets no journal_mode or synchronous pragma, so SQLite's defaults hold: rollback
    # journal, synchronous=FULL. Each step's output is its own commit, each commit syncs.
    durability = "fsync per step (SQLite defaults: rollback journal, synchronous=FULL)"

    def system_database_url(self) -> str:
        return f"sqlite:///{self.directory.resolve() / 'dbos.sqlite'}"


class DbosPostgres(_Dbos):
    store = "PostgreSQL"
    durability = "fsync per step (one commit per step; PostgreSQL default synchronous_commit=on)"

    def system_database_url(self) -> str:
        if self.database_url is None:
            raise ValueError("DbosPostgres needs a database URL")
        return self.database_url


def _check(got: object, expected: object) -> None:
    if got != expected:
        raise RuntimeError(f"DBOS returned {got!r}, expected {expected!r}")
