"""Deploys of changed code: nothing a worker cannot run is destroyed; what can move, moves.

An instance pauses under one version of its module; the module's file is
edited and reloaded (as a new deployment would import it), and a worker of the
new version meets the instance. Code it cannot run leaves the instance
blocked, its state and events byte for byte as they were, and a worker with
the old code finishes it.
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
import sys
import textwrap
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from harness import running

from durable import (
    Client,
    DurableBackend,
    InMemoryStateStore,
    PauseForEventException,
    Worker,
    make_durable,
    open_store,
)
from durable.stores.sealing import state_bound

_names = count()

V1 = '''
from durable import PauseForEventException, make_durable


async def record(what):
    return what


async def flow(n):
    total = n
    raise PauseForEventException("go")
    total += await record(1)
    return total


flow_program = make_durable(flow)
'''


class Deployment:
    """One module, edited in place between versions (each version imported afresh)."""

    def __init__(self, directory: Path, source: str) -> None:
        self.name = f"deploy_case_{next(_names)}"
        self.path = directory / f"{self.name}.py"
        self.path.write_text(textwrap.dedent(source))
        sys.path.insert(0, str(directory))
        self.module = importlib.import_module(self.name)

    def edit(self, old: str, new: str) -> Any:
        text = self.path.read_text()
        assert old in text, old
        self.path.write_text(text.replace(old, new))
        return self.reload()

    def reload(self) -> Any:
        spec = importlib.util.spec_from_file_location(self.name, self.path)
        spec.loader.exec_module(self.module)
        return self.module


@pytest.fixture
async def client(store_url):
    store = open_store(store_url)
    yield Client(store)
    await store.close()


async def paused(client: Client, module: Any, ids: list[str]) -> None:
    """Start ``ids`` and run them until they wait for "go"."""
    for instance_id in ids:
        await client.start(module.flow_program, 1, instance_id=instance_id)
    async with running(Worker(client.store, [module.flow_program])):
        for instance_id in ids:
            await client.wait_for_status(instance_id, "waiting", timeout=30)


async def row(client: Client, instance_id: str) -> tuple[Any, ...]:
    """What the store holds for an instance: its state blob and its events."""
    state = await client.store.load(instance_id)
    return (state, await client.store.events(instance_id))


async def test_code_that_cannot_run_blocks_the_instance_intact_and_the_old_code_finishes_it(
        tmp_path, client) -> None:
    deployment = Deployment(tmp_path, V1)
    await paused(client, deployment.module, ["a"])
    await client.publish_event("a", "go")
    before = await row(client, "a")
    v2 = deployment.edit('raise PauseForEventException("go")', 'raise PauseForEventException("start")')
    worker = Worker(client.store, [make_durable(v2.flow)], name="worker-v2")
    async with running(worker):
        info = await client.wait_for_status("a", "blocked", timeout=30)
    assert info.status == "blocked" and info.blocked_by == "worker-v2"
    assert "flow()" in info.reason and "no longer exists" in info.reason
    assert "raise PauseForEventException('go')#1" in info.reason
    assert await row(client, "a") == before  # state and events untouched
    v1 = deployment.edit('raise PauseForEventException("start")', 'raise PauseForEventException("go")')
    async with running(Worker(client.store, [make_durable(v1.flow)])):
        assert await client.result("a", timeout=30) == 2


async def test_a_change_after_the_resume_point_moves_every_paused_instance(tmp_path, client) -> None:
    deployment = Deployment(tmp_path, V1)
    ids = [f"i{n}" for n in range(5)]
    await paused(client, deployment.module, ids)
    v2 = deployment.edit("total += await record(1)", "total += await record(10)")
    async with running(Worker(client.store, [v2.flow_program])):
        for instance_id in ids:
            await client.publish_event(instance_id, "go")
        assert [await client.result(i, timeout=30) for i in ids] == [11] * 5


async def test_an_event_payload_that_cannot_be_loaded_blocks_until_it_can(tmp_path, client) -> None:
    deployment = Deployment(tmp_path, V1.replace(
        'raise PauseForEventException("go")\n    total += await record(1)',
        'payload = await wait_for_event("go")\n    total += await record(payload.amount)').replace(
        "import PauseForEventException, make_durable", "import make_durable, wait_for_event"))
    await paused(client, deployment.module, ["p"])
    name = f"payloads_{next(_names)}"  # only this (the publishing) process has it, at first
    (tmp_path / f"{name}.py").write_text("class Amount:\n    def __init__(self, amount):\n"
                                         "        self.amount = amount\n")
    amount = importlib.import_module(name).Amount(5)
    await client.publish_event("p", "go", amount)
    before = await row(client, "p")
    del sys.modules[name]
    (tmp_path / f"{name}.py").rename(tmp_path / "hidden.py")
    importlib.invalidate_caches()
    async with running(Worker(client.store, [deployment.module.flow_program], name="w")):
        info = await client.wait_for_status("p", "blocked", timeout=30)
    assert info.status == "blocked", info
    assert "cannot load the payload of event 'go'" in info.reason and info.blocked_by == "w"
    assert await row(client, "p") == before
    (tmp_path / "hidden.py").rename(tmp_path / f"{name}.py")  # the fix is deployed
    importlib.invalidate_caches()
    async with running(Worker(client.store, [deployment.module.flow_program])):
        assert await client.result("p", timeout=30) == 6


async def test_a_state_that_cannot_be_read_blocks_and_is_left_as_it_is(tmp_path) -> None:
    deployment = Deployment(tmp_path, V1)
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}")
    client = Client(store)
    await paused(client, deployment.module, ["c"])
    garbage = store.keyring.seal(b"garbage", state_bound("c"))  # signed, but no pickle
    with sqlite3.connect(path) as database:
        good = database.execute("SELECT state FROM durable_instances WHERE id = 'c'").fetchone()[0]
        database.execute("UPDATE durable_instances SET state = ? WHERE id = 'c'", (garbage,))
    await client.publish_event("c", "go")
    async with running(Worker(store, [deployment.module.flow_program], name="w")):
        info = await client.wait_for_status("c", "blocked", timeout=30)
    assert "the saved state of instance 'c' cannot be read" in info.reason
    with sqlite3.connect(path) as database:
        assert database.execute("SELECT state FROM durable_instances WHERE id = 'c'").fetchone()[0] \
            == garbage
        database.execute("UPDATE durable_instances SET state = ? WHERE id = 'c'", (good,))
    async with running(Worker(store, [deployment.module.flow_program])):
        assert await client.result("c", timeout=30) == 2
    await store.close()


async def test_an_instance_whose_state_cannot_be_read_can_be_terminated(tmp_path) -> None:
    deployment = Deployment(tmp_path, V1)
    path = tmp_path / "store.db"
    async with Client(f"sqlite:///{path}") as client:
        await paused(client, deployment.module, ["t"])
        with sqlite3.connect(path) as database:
            database.execute("UPDATE durable_instances SET state = ? WHERE id = 't'", (b"junk",))
        assert await client.terminate("t", "unreadable") is True
        info = await client.status("t")
        assert (info.status, info.reason) == ("terminated", "unreadable")


async def test_a_worker_that_cannot_run_some_code_does_not_claim_it_again(tmp_path, client) -> None:
    deployment = Deployment(tmp_path, V1)
    ids = [f"b{n}" for n in range(20)]
    await paused(client, deployment.module, ids)
    v2 = deployment.edit('raise PauseForEventException("go")', 'raise PauseForEventException("start")')
    claims: list[list[str]] = []
    store = client.store
    original = store.claim

    async def counting(*args: Any, **kwargs: Any) -> Any:
        leases = await original(*args, **kwargs)
        claims.append([lease.instance_id for lease in leases])
        return leases
    store.claim = counting
    for instance_id in ids:
        await client.publish_event(instance_id, "go")
    async with running(Worker(store, [make_durable(v2.flow)], concurrency=5, poll_interval=0.05)):
        while len(claims) < 10:  # it looked again and again
            await asyncio.sleep(0.01)
    claimed = [instance_id for batch in claims for instance_id in batch]
    assert len(claimed) == 5  # its first batch: the others need the code it refused
    statuses = {(await client.status(i)).status for i in claimed}
    assert statuses == {"blocked"}
    rest = {(await client.status(i)).status for i in ids if i not in claimed}
    assert rest == {"waiting"}  # runnable by a worker that has their code


async def test_check_says_which_instances_move_and_which_stay_without_loading_state(
        tmp_path, client) -> None:
    deployment = Deployment(tmp_path, V1.replace("async def flow(n):", '''async def flow(n):
    if n > 1:
        raise PauseForEventException("early")'''))
    await paused(client, deployment.module, ["moves"])
    await client.start(deployment.module.flow_program, 2, instance_id="stays")
    async with running(Worker(client.store, [deployment.module.flow_program])):
        await client.wait_for_status("stays", "waiting", timeout=30)
    v2 = deployment.edit('raise PauseForEventException("early")', 'raise PauseForEventException("soon")')
    loads = []
    original = client.store.load

    async def counting(instance_id: str) -> Any:
        loads.append(instance_id)
        return await original(instance_id)
    client.store.load = counting
    checked = {c.instance_id: c for c in await client.check([make_durable(v2.flow)])}
    assert loads == []
    moved, = checked["moves"].frames
    assert checked["moves"].runs and moved.outcome == "moves" and moved.function == "flow"
    assert moved.new_line == moved.old_line  # the edit is above it, on a line of the same count
    stuck, = checked["stays"].frames
    assert not checked["stays"].runs and stuck.outcome == "stays"
    assert "raise PauseForEventException('early')#1" in stuck.reason
    assert "no longer exists" in stuck.reason


async def test_retry_runs_a_failed_instance_again_from_its_last_save_on_the_fixed_code(
        tmp_path, client) -> None:
    deployment = Deployment(tmp_path, '''
from durable import make_durable

CALLS = []


async def reserve(order):
    CALLS.append(("reserve", order))
    return order * 10


async def charge(amount):
    return amount // 0  # the bug


async def checkout(order):
    reserved = await reserve(order)
    charged = await charge(reserved)
    return reserved, charged


checkout_program = make_durable(checkout)
''')
    await client.start(deployment.module.checkout_program, 4, instance_id="r")
    async with running(Worker(client.store, [deployment.module.checkout_program])):
        with pytest.raises(ZeroDivisionError):
            await client.result("r", timeout=30)
    fixed = deployment.edit("return amount // 0  # the bug", "return amount + 1")
    assert await client.retry("r") is True
    assert await client.retry("r") is False  # it has not failed (any more)
    async with running(Worker(client.store, [fixed.checkout_program])):
        assert await client.result("r", timeout=30) == (40, 41)
    assert fixed.CALLS == []  # reserve did not run again: its result was saved before the failure


def _numbered_backwards(finish: Any) -> Any:
    """``Emitter.finish`` of a compiler that numbers the same blocks the other way round (the
    entry stays 0): the same code, every resume block under another number."""
    def renumbered(self: Any, entry: int) -> Any:
        blocks, labels = finish(self, entry)
        last = len(blocks) - 1
        new = {block.pc: (0 if block.pc == 0 else last + 1 - block.pc) for block in blocks}
        for block in blocks:
            block.pc = new[block.pc]
            block.successors = {new[s] for s in block.successors}
            if block.handler is not None:
                block.handler.target = new[block.handler.target]
        return sorted(blocks, key=lambda b: b.pc), {label: new[n] for label, n in labels.items()}
    return renumbered


async def test_a_compiler_that_numbers_blocks_differently_never_resumes_by_number(
        tmp_path, monkeypatch) -> None:
    from durable.compiler.emitter import Emitter

    deployment = Deployment(tmp_path, V1.replace("    total += await record(1)\n", (
        "    total += await record(1)\n    total += await record(2)\n"
        '    raise PauseForEventException("again")\n    total += await record(3)\n')))
    backend = DurableBackend(InMemoryStateStore())
    before = make_durable(deployment.module.flow)
    with pytest.raises(PauseForEventException):
        await before(1, orchestration_backend=backend, instance_id="n")
    old = before.function
    monkeypatch.setattr(Emitter, "finish", _numbered_backwards(Emitter.finish))
    after = make_durable(deployment.reload().flow)  # the same source, lowered anew
    new = after.function
    assert new.source_fingerprint == old.source_fingerprint
    assert new.fingerprint != old.fingerprint  # the block table is part of the code's identity
    assert new.points.keys() == old.points.keys() and new.points != old.points  # renumbered
    backend.publish_event("n", "go")  # each resumes by its point's name, not its number
    with pytest.raises(PauseForEventException) as paused_at:
        await after(orchestration_backend=backend, instance_id="n")
    assert paused_at.value.event == "again"
    backend.publish_event("n", "again")
    assert await after(orchestration_backend=backend, instance_id="n") == 7
