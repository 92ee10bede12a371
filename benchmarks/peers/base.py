"""What every system under comparison implements, and the child process that runs one.

Each measurement runs in a child process of its own (``python benchmarks/peer.py ...``):
recovery needs a fresh process anyway, durable-python 0.1.1 installs a package named
``durable`` too (so its child gets its own path), and no system's caches or threads leak into
another's numbers. This module imports no system under test.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PEER_SCRIPT = Path(__file__).resolve().parent.parent / "peer.py"
READY = "ready"  # the first line of a round trip's marks file: the waiter is waiting


def start_clock() -> float:
    """The start of a timed region: the garbage of imports and set-up collected first, so a
    full collection of it does not land in a region of a few milliseconds in one system's run
    and not in another's (later collections that the work itself causes are still timed)."""
    gc.collect()
    return time.perf_counter()


class Unsupported(Exception):
    """This system cannot do this scenario; the message says why (shown in the results)."""


class Peer:
    """One system (one library with one store), as run inside a child process.

    ``directory`` belongs to this measurement: the system keeps its data there (or, for a
    server, in the database ``database_url`` names). Every method runs one measurement and
    returns seconds (or steps per second) measured inside this process, around the work only.
    """

    label = ""  # e.g. "DBOS"
    store = ""  # e.g. "SQLite"
    durability = ""  # e.g. "fsync per step", "no fsync", "memory"

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        self.directory = directory
        self.database_url = database_url

    # 1. per-step overhead
    def steps(self, n: int) -> float:
        """Seconds to run one new instance of ``n`` trivial steps to its end."""
        raise Unsupported("not implemented")

    # 2. recovery
    def prepare(self, k: int) -> None:
        """Run an instance through ``k`` completed steps and stop (the process then exits,
        as if it died); its data stays in ``directory``."""
        raise Unsupported("not implemented")

    def recover(self, k: int) -> float:
        """In a fresh process: seconds from before the library starts to the moment step
        ``k + 1`` of the prepared instance begins."""
        raise Unsupported("not implemented")

    # 3. event round trip
    def serve(self, count: int, marks: Path) -> None:
        """Start one instance that waits ``count`` times for an event named ``e{i}``; append
        ``READY`` to ``marks`` once it waits, then ``time.time()`` each time it continues past
        a wait; return when the instance ends."""
        raise Unsupported("not implemented")

    def publish(self, index: int) -> None:
        """From another process: publish event ``e{index}`` to the instance ``serve`` runs."""
        raise Unsupported("not implemented")

    def close(self) -> None:
        """Let go of what ``publish`` opened (the publisher calls it once at the end)."""

    # 4. state size
    def holding(self, m: int, n: int) -> float:
        """Seconds per step for ``n`` trivial steps while the program holds a list of ``m``
        items in a local variable."""
        raise Unsupported("not implemented")

    # 5. throughput
    def throughput(self, instances: int, steps: int) -> float:
        """Steps per second: ``instances`` instances of ``steps`` trivial steps each, run
        concurrently on one worker (one process)."""
        raise Unsupported("not implemented")


def wait_for_lines(path: Path, count: int, timeout: float) -> list[str]:
    """The first ``count`` lines of ``path`` once it has them (polled every 0.2 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) >= count:
            return lines[:count]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name}: {len(lines)} of {count} lines after {timeout} s")
        time.sleep(0.0002)


def append_line(path: Path, text: str) -> None:
    with open(path, "a") as marks:
        marks.write(text + "\n")


def round_trips(peer: Peer, key: str, count: int, timeout: float) -> list[float]:
    """Seconds from just before each publish (in another process) until the instance continued:
    this process serves, a child publishes each event once the previous one arrived."""
    marks = peer.directory / "marks.log"
    publisher = subprocess.Popen(
        [sys.executable, str(PEER_SCRIPT), key, "publisher", str(count + 1), str(peer.directory),
         *([peer.database_url] if peer.database_url else [])],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        peer.serve(count + 1, marks)  # the first one warms up both processes: not counted
        out, _ = publisher.communicate(timeout=timeout)
    finally:
        publisher.kill()
    if publisher.returncode != 0:
        raise RuntimeError(f"the publisher of {key} failed (exit {publisher.returncode})")
    sent = json.loads(out)["value"]
    continued = [float(line) for line in marks.read_text().splitlines()[1:]]
    return [arrived - published
            for published, arrived in zip(sent, continued, strict=True)][1:]


def publisher(peer: Peer, count: int, timeout: float) -> list[float]:
    """The publishing side of ``round_trips``: the time each event was sent."""
    marks = peer.directory / "marks.log"
    wait_for_lines(marks, 1, timeout)
    sent = []
    for index in range(count):
        sent.append(time.time())
        peer.publish(index)
        wait_for_lines(marks, index + 2, timeout)
    peer.close()
    return sent


def report(result: Any) -> None:
    """The child's answer, as the one line of JSON its parent reads."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
