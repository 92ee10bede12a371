"""Differential property tests: a random program run durably behaves exactly as run plainly.

``program_generator.programs()`` draws whole async programs. Each is run
plainly (``PAUSE`` is a no-op) and durably; the durable run is saved after
every await and, following a crash mask, dropped right after chosen saves
and continued by a fresh runtime over the same store. The outcome (value, or
exception type and args) and the trace of side effects must be equal.

A second property runs a few programs with a real process boundary: every
save ends the process (``os._exit``), and a new interpreter continues from
the ``DiskStateStore``.

Every bug these found is kept below as an ``@example`` (the regression
corpus), reduced to a small program.

Knobs: ``DURABLE_DIFF_EXAMPLES`` (default 200) and
``DURABLE_DIFF_PROCESS_EXAMPLES`` (default 6) scale the number of generated
programs, e.g. for a long bug hunt.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import PRELUDE, load_module, run_durable, run_plain
from hypothesis import HealthCheck, assume, event, example, given, note, settings, target
from hypothesis import strategies as st
from program_generator import IN_PROCESS_ONLY, SUPPORT, programs

EXAMPLES = int(os.environ.get("DURABLE_DIFF_EXAMPLES", "200"))
PROCESS_EXAMPLES = int(os.environ.get("DURABLE_DIFF_PROCESS_EXAMPLES", "6"))

NEVER = 0  # no save is followed by a crash
ALWAYS = -1  # every save is (all bits set)


@st.composite
def crash_masks(draw: st.DrawFn) -> int:
    """Which saves are followed by a simulated crash: bit n % 64 of the mask for save n.

    Mostly restarts (every save, or a random subset); now and then none at all.
    """
    kind = draw(st.sampled_from(["always", "random", "always", "random", "never"]))
    if kind == "random":
        return draw(st.integers(1, 2**64 - 2))
    return ALWAYS if kind == "always" else NEVER


def program(body: str, fuel: int = 150) -> str:
    """A regression program: the generator's support classes plus ``body``."""
    return SUPPORT.format(fuel=fuel) + "\n" + textwrap.dedent(body)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("differential")


def _bucket(n: int) -> str:
    for limit in (0, 4, 19, 99):
        if n <= limit:
            return f"<= {limit}"
    return ">= 100"


def _mask_name(mask: int) -> str:
    return {NEVER: "never", ALWAYS: "after every save"}.get(mask, "random mask")


async def run_both(source: str, directory: Path, mask: int,
                   save_every_await: bool) -> tuple[Any, Any, int, int]:
    """The plain (outcome, trace), the durable one, the number of saves and of runs."""
    expected = await run_plain(load_module(source, directory, durable=False), "main", ())
    saves = 0

    def crash(n: int) -> bool:
        nonlocal saves
        saves = n + 1
        return bool((mask >> (n % 64)) & 1)

    module = load_module(source, directory, durable=True)
    result, trace, runs = await run_durable(module, "main", (), crash=crash,
                                            save_every_await=save_every_await)
    return expected, (result, trace), saves, runs


# --- regression corpus: every bug the properties found, reduced ---------------------------------

# diff-1: a dict iterator comes back as a list iterator after a restart, so adding a key
# while iterating no longer raises "dictionary changed size during iteration".
DICT_CHANGED_DURING_ITERATION = program("""
    async def main():
        dct = {"x": 1, "y": 2}
        out = []
        for k in dct:
            out.append(await nd(k))
            dct["z"] = 3
        return out
""")

# diff-2: `async with A(), B():` inside a loop: a coroutine stays in the saved state.
TWO_ASYNC_MANAGERS_IN_LOOP = program("""
    async def main():
        for x in [1]:
            async with AsyncManager("a"), AsyncManager("b"):
                pass
        return 0
""")

# diff-3: `x = f(x)` after a suspension: liveness counts the write before the read, so x
# is not saved, and after a restart the read raises NameError.
SELF_ASSIGNMENT = program("""
    async def f0(p0, acc):
        a = p0 + 0
        await box_add(a)
        a = a
        return 0

    async def box_add(x):
        return await Box(x).add(0)

    async def main():
        acc = []
        return await f0(0, acc), acc
""")

# diff-4: a lambda saved by value gets a copy of the module globals it reads, so after a
# restart it no longer sees the module's variables.
LAMBDA_READS_GLOBAL = program("""
    async def main():
        global G
        f = lambda y: y + G
        await nd(0)
        G = 5
        return f(1)
""")


# diff-5: a value logged, then changed after a save: the plain run's trace showed the change
# (the trace kept a reference), the durable run's did not (its list came back from the save).
# The trace now keeps what a value was when it was logged.
LOGGED_VALUE_CHANGED_LATER = program("""
    async def main():
        lst = [0, 2, 3]
        lst[(await nd(lst)).count(0) % len(lst)] = 0
        return lst
""")


@settings(max_examples=EXAMPLES, deadline=None,
          # programs are big composite draws, and each runs two module compilations
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(source=programs(), mask=crash_masks(), save_every_await=st.sampled_from([True, False]))
@example(source=DICT_CHANGED_DURING_ITERATION, mask=ALWAYS, save_every_await=True)
@example(source=TWO_ASYNC_MANAGERS_IN_LOOP, mask=NEVER, save_every_await=True)
@example(source=SELF_ASSIGNMENT, mask=ALWAYS, save_every_await=True)
@example(source=LAMBDA_READS_GLOBAL, mask=ALWAYS, save_every_await=False)
@example(source=LOGGED_VALUE_CHANGED_LATER, mask=ALWAYS, save_every_await=True)
def test_durable_run_matches_plain_run(source: str, mask: int, save_every_await: bool,
                                       workdir: Path) -> None:
    note(f"program:\n{source}")
    expected, actual, saves, runs = asyncio.run(run_both(source, workdir, mask, save_every_await))
    target(float(saves), label="saves")
    event(f"saves {_bucket(saves)}")
    event(f"crashes: {_mask_name(mask)}")
    event(f"outcome: {expected[0][0] if expected[0][0] == 'ok' else expected[0][1]}")
    assert actual == expected, (
        f"durable run differs from the plain run (mask {mask:#x}, "
        f"save_every_await={save_every_await}, {saves} saves, {runs} runs)\n"
        f"plain:   {expected!r}\ndurable: {actual!r}"
    )


# --- the same, with a real process boundary at every save ------------------------------------------

PAUSE_LINE = re.compile(r"^(\s*)PAUSE\((.*)\)\s*$", re.MULTILINE)  # as in harness.load_module

FILE_TRACE = '''\
import os as _os


class _FileTrace:
    """Side effects go to a file, so that they outlive the process that had them."""

    def __init__(self, path):
        self.path = path

    def append(self, item):
        with open(self.path, "a") as file:
            file.write(repr(item) + "\\n")


TRACE = _FileTrace(_os.environ["DURABLE_DIFF_TRACE"])
'''
assert "TRACE = []\n" in PRELUDE
PROCESS_PRELUDE = PRELUDE.replace("TRACE = []\n", FILE_TRACE)

DRIVER = '''\
"""Continue the instance until its next save, then end this process at once."""
import asyncio
import importlib
import os
import sys
from pathlib import Path

from durable import (DiskStateStore, DurableBackend, DurableRuntime, PauseForEventException,
                     make_durable)

work = Path(sys.argv[1])
sys.path.insert(0, str(work))
module = importlib.import_module(sys.argv[2])
fuel = work / "fuel"  # module globals are not durable state: the driver carries FUEL over
if fuel.exists():
    module.FUEL[0] = int(fuel.read_text())


class ExitAfterSave(DurableBackend):
    async def save_state(self, instance_id, state):
        await super().save_state(instance_id, state)
        fuel.write_text(str(module.FUEL[0]))
        os._exit(0)


async def drive():
    backend = ExitAfterSave(DiskStateStore(work / "state"))
    runtime = DurableRuntime(make_durable(module.main), backend, "instance",
                             save_every_await=True)
    try:
        outcome = ("ok", await runtime.run())
    except PauseForEventException as pause:
        backend.publish_event("instance", pause.event)
        os._exit(3)
    except Exception as error:
        args = tuple(repr(a) if isinstance(a, BaseException) else a for a in error.args)
        outcome = ("error", type(error).__qualname__, args)
    (work / "outcome").write_text(repr(outcome))
    os._exit(4)


asyncio.run(drive())
'''

ROOT = Path(__file__).resolve().parent.parent
MAX_PROCESS_SAVES = 40  # keeps the test's time in check: a process per save costs ~0.5 s


def run_in_processes(source: str, work: Path) -> tuple[str, list[str], int]:
    """Run ``main`` in a new process per save; the outcome's repr, the trace's reprs, processes."""
    work.mkdir()
    body = PAUSE_LINE.sub(r"\1raise PauseForEventException(\2)", textwrap.dedent(source))
    (work / "program_under_test.py").write_text(PROCESS_PRELUDE + "\n" + body)
    (work / "driver.py").write_text(DRIVER)
    env = dict(os.environ, DURABLE_DIFF_TRACE=str(work / "trace"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for processes in range(1, 4 * MAX_PROCESS_SAVES + 10):
        done = subprocess.run([sys.executable, str(work / "driver.py"), str(work),
                               "program_under_test"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode in (0, 3, 4), f"driver died ({done.returncode}):\n{done.stderr}"
        if done.returncode == 4:
            trace = work / "trace"
            lines = trace.read_text().splitlines() if trace.exists() else []
            return (work / "outcome").read_text(), lines, processes
    raise AssertionError(f"no end after {processes} processes")


# Always run across processes: durable calls, a pause in a callee, a user iterator (pickled
# with its position), fuel carried over.
ACROSS_PROCESSES = program("""
    async def helper(x):
        PAUSE("h")
        return await nd(x) + 1

    async def main():
        out = []
        for i in range(2):
            tick()
            out.append(await helper(i))
        for v in Countdown(2):
            tick()
            out.append(await nd(v))
        return out, FUEL[0]
""", fuel=20)


@settings(max_examples=PROCESS_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(source=programs(exclude=IN_PROCESS_ONLY, max_functions=2, max_statements=10))
@example(source=ACROSS_PROCESSES)
def test_fresh_process_at_every_save(source: str,
                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    note(f"program:\n{source}")
    work = tmp_path_factory.mktemp("processes")
    expected, in_process, saves, _ = asyncio.run(run_both(source, work, NEVER, True))
    assert in_process == expected  # the in-process property, first
    # A process per save is slow: keep to programs of a sensible length.
    assume(saves <= MAX_PROCESS_SAVES)
    outcome, trace, processes = run_in_processes(source, work / "run")
    event(f"processes {_bucket(processes)}")
    assert (outcome, trace) == (repr(expected[0]), [repr(item) for item in expected[1]]), (
        f"across {processes} processes the durable run differs from the plain run\n"
        f"plain:   {expected!r}\ndurable: {(outcome, trace)!r}"
    )
