"""Fan-out under SIGKILL: branches of a gather and a map in a real process, killed at random.

A child process runs one instance seed-style on a SQLite store: a ``gather``
of branches, each a loop of at-most-once steps with library awaits between
them, then a ``map`` over the branches' totals. The parent SIGKILLs children
at random moments and starts new ones until the instance returns. Then the
journal must show that no step's effect ran twice, that every step either
ran (and its result was used) or raised ``StepInterrupted`` in the program,
and the result must be what the journal says it must be.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BRANCHES, STEPS = 4, 6

CHILD = textwrap.dedent('''
    import asyncio
    import os
    import random
    import sys

    from journaling import append_line

    from durable import (DurableBackend, SqliteStateStore, StepInterrupted, gather, make_durable,
                         map, step)

    JOURNAL = sys.argv[1]
    RNG = random.Random(sys.argv[3])


    def journal(line):
        append_line(JOURNAL, line)


    def effect(branch, i):
        journal(f"effect {branch} {i}")
        return branch * 100 + i


    async def work(branch, steps):
        total = 0
        for i in range(steps):
            try:
                total += await step(effect, branch, i, at_most_once=True)
            except StepInterrupted:
                journal(f"interrupted {branch} {i}")
                total -= 1
            await asyncio.sleep(RNG.uniform(0, 0.004))  # a library await, inline
        return total


    async def double(total):
        await asyncio.sleep(RNG.uniform(0, 0.004))
        return await step(lambda: total * 2, name=f"double {total}")


    async def fan(branches, steps):
        totals = await gather(*[work(b, steps) for b in range(branches)])
        return await map(double, totals, concurrency=2)


    async def main():
        store = SqliteStateStore(sys.argv[2])
        try:
            result = await make_durable(fan)(int(sys.argv[4]), int(sys.argv[5]),
                                             orchestration_backend=DurableBackend(store),
                                             instance_id="fan")
        finally:
            await store.close()
        journal(f"result {result}")


    asyncio.run(main())
''')


@pytest.mark.parametrize("seed", [1, 2])
def test_branches_survive_sigkill_and_no_step_runs_twice(tmp_path: Path, seed: int) -> None:
    (tmp_path / "fan_child.py").write_text(CHILD)
    journal, database = tmp_path / "journal.txt", tmp_path / "fan.db"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "tests")]))
    rng = random.Random(seed)
    kills = 0
    for attempt in range(60):
        child = subprocess.Popen(
            [sys.executable, str(tmp_path / "fan_child.py"), str(journal), str(database),
             f"{seed}/{attempt}", str(BRANCHES), str(STEPS)],
            env=env, stderr=subprocess.PIPE, text=True)
        if attempt < 12:  # then let it finish
            kills += _kill_after_progress(child, journal, rng.randint(1, 8))
        child.wait(timeout=120)
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr.read()
    else:
        raise AssertionError("the instance never finished")
    lines = journal.read_text().splitlines()
    effects = Counter(tuple(map(int, line.split()[1:])) for line in lines
                      if line.startswith("effect "))
    interrupted = {tuple(map(int, line.split()[1:])) for line in lines
                   if line.startswith("interrupted ")}
    assert all(count == 1 for count in effects.values()), effects  # at most once
    every = {(b, i) for b in range(BRANCHES) for i in range(STEPS)}
    assert set(effects) | interrupted == every  # each ran, or the program was told it did not
    totals = [sum(-1 if (b, i) in interrupted else b * 100 + i for i in range(STEPS))
              for b in range(BRANCHES)]
    results = {line for line in lines if line.startswith("result ")}  # a child killed after
    assert results == {f"result {[2 * total for total in totals]}"}  # it wrote one says it again
    assert kills >= 3  # the test did kill it mid-run


def _kill_after_progress(child: subprocess.Popen[str], journal: Path, lines: int) -> int:
    """SIGKILL ``child`` once it has written ``lines`` more journal lines (1 if it did)."""
    start = _count(journal)
    deadline = time.monotonic() + 60
    while child.poll() is None and _count(journal) < start + lines:
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.001)
    if child.poll() is not None:
        return 0
    child.send_signal(signal.SIGKILL)
    return 1


def _count(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
