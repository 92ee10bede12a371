"""Run the same program plainly and durably, and compare what happened.

Programs are source text. ``PAUSE("name")`` lines become
``raise PauseForEventException("name")`` in the durable version and nothing
in the plain one. The durable run is interrupted right after every save
(or the saves a mask selects), and continued by a fresh runtime over the same
store, the way a new process would continue it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import os
import pickle
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from durable import (
    DurableBackend,
    DurableRuntime,
    InMemoryStateStore,
    PauseForEventException,
    Worker,
    make_durable,
)
from durable.stores import StateStore
from durable.testing import VirtualClock

_PAUSE = re.compile(r"^(\s*)PAUSE\((.*)\)\s*$", re.MULTILINE)
_modules = itertools.count()

PRELUDE = """\
import asyncio
import copy
from durable import PauseForEventException

# What each value was when it was logged (a copy: the program may change it later).
TRACE = []

def log(*items):
    TRACE.append(copy.deepcopy(items[0] if len(items) == 1 else items))
    return items[-1] if items else None

async def nd(value):
    # an ordinary library-style coroutine (awaited inline)
    await asyncio.sleep(0)
    TRACE.append(("nd", copy.deepcopy(value)))
    return value
"""


def prelude(durable: bool) -> str:
    """What every generated module starts with; ``DURABLE`` tells which version it is."""
    return PRELUDE + f"DURABLE = {durable}\n"


async def created(program: Any, backend: DurableBackend, instance_id: str, *args: Any,
                  **kwargs: Any) -> None:
    """Save the state a fresh start saves, running nothing (as ``Client.start`` does): the
    instance exists, so events can be published to it before it first runs."""
    state = DurableRuntime(program, backend, instance_id).initial_state(*args, **kwargs)
    await backend.save_state(instance_id, state)


class SeedStyleStore(StateStore):
    """A store written against the seed interface only: async load/save, pickled bytes in a dict."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def load(self, instance_id: str) -> dict[str, Any] | None:
        blob = self.blobs.get(instance_id)
        return None if blob is None else pickle.loads(blob)

    async def save(self, instance_id: str, state: dict[str, Any]) -> None:
        self.blobs[instance_id] = pickle.dumps(state)


class SimulatedCrash(Exception):
    """Raised right after a save: the runtime that saved is dropped, as if its process died."""


def load_module(source: str, directory: Path, durable: bool) -> Any:
    """Write ``source`` (after the prelude) to a fresh module and import it."""
    body = textwrap.dedent(source)
    if durable:
        body = _PAUSE.sub(r"\1raise PauseForEventException(\2)", body)
    else:
        body = _PAUSE.sub(r"\1pass", body)
    name = f"durable_case_{next(_modules)}"
    path = directory / f"{name}.py"
    path.write_text(prelude(durable) + "\n" + body)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def reload_module(module: Any) -> Any:
    """Run the module's (edited) file again in the same module object, like importlib.reload."""
    spec = importlib.util.spec_from_file_location(module.__name__, module.__file__)
    spec.loader.exec_module(module)
    return module


def outcome_of(value: Any = None, error: BaseException | None = None) -> tuple[Any, ...]:
    if error is None:
        return ("ok", value)
    return ("error", type(error).__qualname__, _args(error))


def _args(error: BaseException) -> Any:
    return tuple(repr(a) if isinstance(a, BaseException) else a for a in error.args)


async def run_plain(module: Any, entry: str, args: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    try:
        result = outcome_of(await getattr(module, entry)(*args))
    except Exception as error:
        result = outcome_of(error=error)
    return result, list(module.TRACE)


class CrashingBackend(DurableBackend):
    def __init__(self, store: StateStore, crash: Callable[[int], bool], saves: itertools.count,
                 clock: VirtualClock | None = None) -> None:
        super().__init__(store, clock=clock)
        self.crash = crash
        self.saves = saves

    async def save_state(self, instance_id: str, state: dict[str, Any]) -> None:
        await super().save_state(instance_id, state)
        if self.crash(next(self.saves)):
            raise SimulatedCrash


async def run_durable(module: Any, entry: str, args: tuple[Any, ...], *,
                      crash: Callable[[int], bool] = lambda n: True,
                      save_every_await: bool = True, max_runs: int = 10_000,
                      store: StateStore | None = None) -> tuple[Any, list[Any], int]:
    """Run to the end through crashes and pauses; return the outcome, the trace, the runs."""
    program = make_durable(getattr(module, entry))
    store = store if store is not None else InMemoryStateStore()
    saves = itertools.count()
    clock = VirtualClock()
    for runs in range(1, max_runs + 1):
        backend = CrashingBackend(store, crash, saves, clock)
        runtime = DurableRuntime(program, backend, "instance", save_every_await=save_every_await)
        try:
            result = outcome_of(await runtime.run(*args))
        except SimulatedCrash:
            continue
        except PauseForEventException as pause:
            if pause.event is not None:  # an event (even one with a timeout) arrives
                backend.publish_event("instance", pause.event)
            else:  # a timer: its time comes
                clock.set(pause.until)
            continue
        except Exception as error:
            result = outcome_of(error=error)
        return result, list(module.TRACE), runs
    raise AssertionError(f"no end after {max_runs} runs")


async def run_both(source: str, directory: Path, entry: str = "main",
                   args: tuple[Any, ...] = (), **options: Any) -> tuple[tuple[Any, list[Any]],
                                                                        tuple[Any, list[Any], int]]:
    """Run ``source`` plainly and durably: (outcome, trace), and (outcome, trace, runs)."""
    plain = await run_plain(load_module(source, directory, durable=False), entry, args)
    durable = await run_durable(load_module(source, directory, durable=True), entry, args,
                                **options)
    return plain, durable


async def compare(source: str, directory: Path, entry: str = "main", args: tuple[Any, ...] = (),
                  **options: Any) -> tuple[Any, list[Any]]:
    """Assert the durable run matches the plain run; return the plain outcome and trace."""
    expected, (result, trace, _) = await run_both(source, directory, entry, args, **options)
    assert (result, trace) == expected, f"durable {(result, trace)} != plain {expected}"
    return expected


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker`` in the background; stop it at the end and wait until it returned."""
    task = asyncio.create_task(worker.run())
    try:
        yield task
    except BaseException:
        worker.stop(now=True)  # do not wait for instances a failed test left blocked
        raise
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def eventually(condition: Callable[[], Any], timeout: float, what: str = "the condition",
                     *workers: subprocess.Popen) -> None:
    """Wait until ``condition()`` (plain or async) holds; fail after ``timeout`` s, or as soon
    as one of ``workers`` (processes the condition depends on) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        assert all(worker.poll() is None for worker in workers), f"{what}: a worker exited"
        done = condition()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        await asyncio.sleep(0.02)


async def durable_command(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run ``python -m durable ARGS`` in ``cwd``, the tests' modules importable: its exit
    code, standard output and standard error."""
    tests = Path(__file__).resolve().parent
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", *args, cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()
