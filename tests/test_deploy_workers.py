"""A deploy with worker processes: v1 and v2 of a module on one store, 100 paused instances.

With a change that cannot move a paused frame, the v2 worker, meeting the
instances first, leaves them blocked and runs none; a v1 worker started beside
it finishes every one with v1's behaviour. With a change that can move, the
v2 worker finishes them all with v2's. A worker SIGKILLed in the middle (and
started again) changes neither: no instance fails, none is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness import eventually

from durable import Client, open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = 100

V1 = textwrap.dedent('''
    import os

    from durable import PauseForEventException, make_durable

    VERSION = "v1"


    async def record(instance, total):
        with open(os.environ["DEPLOY_LOG"], "a") as log:
            log.write(f"{instance} {VERSION} {os.getpid()}\\n")
        return total


    async def flow(instance, n):
        total = n
        raise PauseForEventException("go")
        total = await record(instance, total + 1)
        return [VERSION, total]


    flow_program = make_durable(flow)
''')
MOVES = [('VERSION = "v1"', 'VERSION = "v2"'), ("total + 1", "total + 10")]
STAYS = [('VERSION = "v1"', 'VERSION = "v2"'), ('Exception("go")', 'Exception("go-now")')]


def version(directory: Path, edits: list[tuple[str, str]]) -> Path:
    text = V1
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    directory.mkdir()
    (directory / "deploy_flow.py").write_text(text)
    return directory


class Workers:
    """Worker processes, each running the module of one version's directory."""

    def __init__(self, store_url: str, tmp_path: Path) -> None:
        self.store_url, self.tmp_path = store_url, tmp_path
        self.log = tmp_path / "calls.log"
        self.started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, directory: Path) -> subprocess.Popen[str]:
        stderr = self.tmp_path / f"worker-{len(self.started)}.log"
        env = dict(os.environ, DEPLOY_LOG=str(self.log),
                   PYTHONPATH=os.pathsep.join([str(directory), str(ROOT)]))
        with open(stderr, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "durable", "worker", "deploy_flow", "--store",
                 self.store_url, "--lease-seconds", "2", "--poll-interval", "0.2"],
                env=env, cwd=directory, stderr=out, text=True)
        self.started.append((process, stderr))
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

    def logs(self) -> str:
        return "".join(path.read_text() for _, path in self.started)

    def finished_calls(self) -> int:
        return self.log.read_text().count("\n") if self.log.exists() else 0


@contextmanager
def workers(store_url: str, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(store_url, tmp_path)
    try:
        yield started
    finally:
        for process, _ in started.started:
            if process.poll() is None:
                started.stop(process)


async def paused_under_v1(client: Client, fleet: Workers, v1: Path, monkeypatch) -> list[str]:
    monkeypatch.syspath_prepend(str(v1))
    monkeypatch.delitem(sys.modules, "deploy_flow", raising=False)
    import deploy_flow

    ids = [f"order-{n}" for n in range(INSTANCES)]
    for n, instance_id in enumerate(ids):
        await client.start(deploy_flow.flow_program, instance_id, n, instance_id=instance_id)

    async def all_waiting() -> bool:
        return len(await client.list(status="waiting", limit=INSTANCES + 1)) == INSTANCES
    fleet.start(v1)
    await eventually(all_waiting, 120)
    return ids


async def publish(client: Client, ids: list[str]) -> None:
    for instance_id in ids:
        await client.publish_event(instance_id, "go")


async def finish(client: Client, fleet: Workers, victim: subprocess.Popen[str], kill_after: int,
                 survivor: Path) -> None:
    """SIGKILL ``victim`` once ``kill_after`` calls ran, start a worker of ``survivor`` in its
    place, and wait until every instance ended."""
    await eventually(lambda: fleet.finished_calls() >= kill_after, 120)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    fleet.start(survivor)

    async def all_ended() -> bool:
        ended = [i for i in await client.list(limit=INSTANCES + 1)
                 if i.status in ("finished", "failed", "terminated")]
        return len(ended) == INSTANCES
    await eventually(all_ended, 180)


async def ended_on(client: Client, fleet: Workers, ids: list[str], version: str, added: int) -> None:
    """Every instance finished, on ``version``'s code alone (none failed)."""
    assert await client.list(status="failed") == []
    results = await asyncio.gather(*(client.result(i, wait=False) for i in ids))
    assert results == [[version, n + added] for n in range(INSTANCES)]
    other = "v2" if version == "v1" else "v1"
    assert f" {other} " not in fleet.log.read_text()


async def test_a_change_that_cannot_move_leaves_every_instance_to_the_old_workers(
        store_url, tmp_path, monkeypatch) -> None:
    v1, v2 = version(tmp_path / "v1", []), version(tmp_path / "v2", STAYS)
    store = open_store(store_url)
    client = Client(store)
    with workers(store_url, tmp_path) as fleet:
        ids = await paused_under_v1(client, fleet, v1, monkeypatch)
        fleet.stop(fleet.started[0][0])
        fleet.start(v2)  # the new deployment meets the instances first, alone
        await publish(client, ids)

        async def some_blocked() -> bool:
            return bool(await client.list(status="blocked"))
        await eventually(some_blocked, 60)
        assert fleet.finished_calls() == 0  # it ran none of them
        v1_worker = fleet.start(v1)  # the old deployment, still running beside it
        await finish(client, fleet, v1_worker, INSTANCES // 3, v1)
        logs = fleet.logs()
    await ended_on(client, fleet, ids, "v1", 1)
    assert "cannot run on worker" in logs  # the v2 worker met some and left them
    await store.close()


async def test_a_change_that_can_move_runs_every_instance_on_the_new_workers(
        store_url, tmp_path, monkeypatch) -> None:
    v1, v2 = version(tmp_path / "v1", []), version(tmp_path / "v2", MOVES)
    store = open_store(store_url)
    client = Client(store)
    with workers(store_url, tmp_path) as fleet:
        ids = await paused_under_v1(client, fleet, v1, monkeypatch)
        fleet.stop(fleet.started[0][0])  # the deploy: v1 stops, v2 starts
        v2_worker = fleet.start(v2)
        await publish(client, ids)
        await finish(client, fleet, v2_worker, INSTANCES // 3, v2)
        logs = fleet.logs()
    await ended_on(client, fleet, ids, "v2", 10)
    assert "moved from" in logs
    await store.close()
