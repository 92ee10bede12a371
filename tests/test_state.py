"""The saved state: incremental, shared objects kept shared, versioned, plain data."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest
from harness import load_module

from durable import DurableBackend, InMemoryStateStore, PauseForEventException, make_durable
from durable.runtime import envelope
from durable.runtime.frame import FunctionCall

DEEP = """
async def leaf(i):
    return i

async def worker(n):
    total = 0
    for i in range(n):
        total += await leaf(i)
    PAUSE("done")
    return total

async def main(n):
    big = list(range(10_000))
    result = await worker(n)
    return result + len(big)
"""


async def test_frames_that_did_not_run_are_not_pickled_again(tmp_path, monkeypatch) -> None:
    module = load_module(DEEP, tmp_path, durable=True)
    pickled = Counter()
    original = FunctionCall.saved_state

    def counting(frame: FunctionCall):
        pickled[frame.function.qualname] += 1
        return original(frame)

    monkeypatch.setattr(FunctionCall, "saved_state", counting)
    backend = DurableBackend(InMemoryStateStore())
    with pytest.raises(PauseForEventException):
        await make_durable(module.main)(50, orchestration_backend=backend, instance_id="i")
    # 50 completed calls of leaf, each saved; main (with its big list) ran only at the start.
    assert pickled["worker"] >= 50
    assert pickled["main"] <= 2
    backend.publish_event("i", "done")
    assert await make_durable(module.main)(orchestration_backend=backend, instance_id="i") == 1225 + 10_000


SHARED = """
async def child(acc, n):
    acc.append(n)
    PAUSE("child")
    acc.append(n + 1)
    return len(acc)

async def main():
    acc = [0]
    alias = acc
    size = await child(acc, 1)
    acc.append(await child(alias, 10))
    return size, acc, alias is acc
"""


async def test_objects_shared_between_frames_stay_shared_across_restarts(tmp_path) -> None:
    module = load_module(SHARED, tmp_path, durable=True)
    program = make_durable(module.main)
    store = InMemoryStateStore()
    result = None
    for _ in range(10):
        backend = DurableBackend(store)  # a fresh runtime each time, state only from the store
        try:
            result = await program(orchestration_backend=backend, instance_id="i")
            break
        except PauseForEventException as pause:
            backend.publish_event("i", pause.event)
    assert result == (3, [0, 1, 2, 10, 11, 5], True)


async def test_saved_state_is_a_versioned_envelope_of_plain_data(tmp_path) -> None:
    module = load_module(DEEP, tmp_path, durable=True)
    store = InMemoryStateStore()
    with pytest.raises(PauseForEventException):
        await make_durable(module.main)(3, orchestration_backend=DurableBackend(store), instance_id="i")
    state = await store.load("i")
    assert state["format"] == envelope.FORMAT
    assert state["python"] == envelope.PYTHON
    assert state["status"] == envelope.PAUSED and state["waiting_for"] == "done"
    assert state["program"] == f"{module.__name__}:main"
    assert all(isinstance(blob, bytes) for blob in state["frames"])
    # Plain data: any store can keep it, with the standard pickle or any other codec.
    assert pickle.loads(pickle.dumps(state)) == state
    frames = [frame for blob in state["frames"] for frame in pickle.loads(blob)]
    assert [f[0].rpartition(":")[2] for f in frames] == ["main", "worker"]
    assert all(len(f[1]) == 16 for f in frames)  # every frame records its function's fingerprint
