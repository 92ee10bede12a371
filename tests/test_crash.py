"""Crash tests with real processes.

A child process runs a durable loop of N durable calls (``await send(i)``, a
user ``async def``) over a ``DiskStateStore``. Every step is written to a
journal file (append + fsync) as it happens:

* ``start i`` / ``done i``  - inside the durable call ``send(i)``;
* ``after i``                - in the caller, once ``send(i)`` delivered its result;
* ``saved <status>``         - by the backend, right *after* a save returned
                               (so the marker proves that save is on disk);
* ``crash <where>``          - the child is about to die there (``os._exit``);
* ``attempt k``/``result r`` - a child started / the instance returned ``r``.

The child dies at seeded random points (inside the call before/after its
side effects, in the caller between calls, in the backend right before and
right after a save), or is SIGKILLed by the parent at random times. The
parent reruns children until the instance finishes, then checks the journal
against the exact guarantee of the runtime:

* state is saved at start, after every completed durable call, and at the end;
* a process that dies continues from the *last save*, never from an earlier
  one (a call whose completion was saved never runs again) and never from a
  later one (whatever ran after the last save runs again: at least once);

and that the result is right.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from durable import DiskStateStore, DurableBackend

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"  # journaling, for the child
CRASH_CODE = 86
INSTANCE = "crash-test"

CHILD = textwrap.dedent('''
    import asyncio
    import json
    import os
    import random
    import sys

    from journaling import append_line

    from durable import (
        DiskStateStore,
        DurableBackend,
        DurableRuntime,
        PauseForEventException,
        make_durable,
    )

    CFG = json.loads(sys.argv[1])
    JOURNAL = CFG["journal"]
    RNG = random.Random(f"{CFG['seed']}/{CFG['attempt']}")
    WAITS = CFG["waits"]  # wait for a "go" event after every call
    PROGRESS = ["start"]  # where this process is; names the crash points of the backend


    def journal(line):
        append_line(JOURNAL, line)


    def already_crashed():
        try:
            with open(JOURNAL) as file:
                return {line[6:].rstrip("\\n") for line in file if line.startswith("crash ")}
        except FileNotFoundError:
            return set()


    FIRED = already_crashed()


    def point(where):
        """Maybe die here: a forced crash point (once), or at random."""
        forced = where in CFG["forced"] and where not in FIRED
        if forced or RNG.random() < CFG["p"]:
            journal(f"crash {where}")
            os._exit(CFG["crash_code"])


    def progress(where):
        PROGRESS[0] = where


    def nap():
        return RNG.uniform(0, CFG["nap"]) if CFG["nap"] else 0


    async def send(i):
        point(f"enter {i}")
        journal(f"start {i}")
        await asyncio.sleep(nap())
        point(f"started {i}")
        journal(f"done {i}")
        progress(f"done {i}")
        point(f"finished {i}")
        return i * i + 1


    async def main(n):
        results = []
        for i in range(n):
            value = await send(i)
            journal(f"after {i}")
            progress(f"after {i}")
            if WAITS:
                raise PauseForEventException("go")
            point(f"between {i}")
            results.append(value)
        return results


    class JournaledBackend(DurableBackend):
        async def save_state(self, instance_id, state):
            await asyncio.sleep(nap())
            point(f"presave@{PROGRESS[0]}")
            await super().save_state(instance_id, state)
            journal(f"saved {state['status']}")
            point(f"postsave@{PROGRESS[0]}")


    async def run():
        journal(f"attempt {CFG['attempt']}")
        print("ready", flush=True)
        backend = JournaledBackend(DiskStateStore(CFG["store"]))
        if CFG.get("create"):  # save what a start saves, run nothing: events can then be sent
            runtime = DurableRuntime(make_durable(main), backend, CFG["instance"])
            await backend.save_state(CFG["instance"], runtime.initial_state(CFG["n"]))
            print("[]", flush=True)
            return
        try:
            result = await make_durable(main)(CFG["n"], orchestration_backend=backend,
                                              instance_id=CFG["instance"])
        except PauseForEventException as pause:
            journal(f"paused for {pause.event}")
            sys.exit(3)
        journal(f"result {json.dumps(result)}")
        print(json.dumps(result), flush=True)


    asyncio.run(run())
''')


def expected_result(n: int) -> list[int]:
    return [i * i + 1 for i in range(n)]


def canonical_trace(n: int) -> list[str]:
    """The journal of a run that is never interrupted (without attempt/crash lines)."""
    trace = ["saved running"]
    for i in range(n):
        trace += [f"start {i}", f"done {i}", "saved running", f"after {i}"]
    return [*trace, "saved completed", f"result {json.dumps(expected_result(n))}"]


class Child:
    def __init__(self, tmp_path: Path, n: int, seed: int, p: float, nap: float = 0.0,
                 forced: tuple[str, ...] = (), waits: bool = False) -> None:
        self.script = tmp_path / "crash_child.py"
        self.script.write_text(CHILD)
        self.journal = tmp_path / "journal.txt"
        self.config = {
            "journal": str(self.journal), "store": str(tmp_path / "store"), "n": n,
            "seed": seed, "p": p, "nap": nap, "forced": list(forced),
            "crash_code": CRASH_CODE, "instance": INSTANCE, "waits": waits,
        }
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")])))

    def command(self, attempt: int, **overrides) -> list[str]:
        config = dict(self.config, attempt=attempt, **overrides)
        return [sys.executable, str(self.script), json.dumps(config)]

    def run(self, attempt: int, **overrides) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(attempt, **overrides), env=self.env,
                              capture_output=True, text=True, timeout=60)

    def lines(self) -> list[str]:
        text = self.journal.read_text()
        assert text.endswith("\n"), f"torn journal line: {text[-80:]!r}"
        return text.splitlines()


def finished_result(proc: subprocess.CompletedProcess[str]) -> list[int]:
    out = proc.stdout.splitlines()
    assert out[0] == "ready" and len(out) == 2, proc.stdout
    return json.loads(out[1])


def segments(lines: list[str]) -> list[tuple[list[str], str | None]]:
    """Split the journal by process: (lines of the program, crash point or None)."""
    result: list[tuple[list[str], str | None]] = []
    for line in lines:
        if line.startswith("attempt "):
            result.append(([], None))
            continue
        assert result, f"journal does not start with an attempt: {line!r}"
        body, crash = result[-1]
        assert crash is None, f"a line after the crash at {crash!r}: {line!r}"
        if line.startswith("crash "):
            result[-1] = (body, line[6:])
        else:
            body.append(line)
    return result


def check_journal(lines: list[str], n: int, *, exact_markers: bool) -> dict[str, int]:
    """Check every process continued from exactly the last save; return some counts.

    ``exact_markers``: processes only died at ``os._exit`` points, so every save that
    reached the disk has its ``saved`` marker. With SIGKILL a process can die after a
    save and before its marker: its successor may then continue from either save.
    """
    trace = canonical_trace(n)
    # Where in trace the next process may continue: right after the last save known to be on
    # disk, or (SIGKILL) after a save that reached the disk without its marker.
    candidates = {0}
    parts = segments(lines)
    for number, (body, _crash) in enumerate(parts):
        if not body:  # died before its first marker; with SIGKILL, perhaps after a save
            if not exact_markers:
                candidates |= {s + 1 for s in candidates if trace[s].startswith("saved ")}
            continue
        starts = [s for s in sorted(candidates) if trace[s:s + len(body)] == body]
        assert starts, (
            f"process {number} did not continue from the last save: it ran {body!r}, "
            f"expected a prefix of {[trace[s:s + 6] for s in sorted(candidates)]!r}"
        )
        assert len(starts) == 1
        start = starts[0]
        end = start + len(body)
        saved_here = [k for k in range(start, end) if trace[k].startswith("saved ")]
        candidates = {saved_here[-1] + 1 if saved_here else start}
        if not exact_markers and end < len(trace) and trace[end].startswith("saved "):
            candidates.add(end + 1)  # died between the save and its marker, perhaps
    last_body, last_crash = parts[-1]
    assert last_crash is None and last_body and last_body[-1] == trace[-1], parts[-1]

    # The same guarantee, stated per call.
    for i in range(n):
        saved_completions = [
            k for k, (body, _) in enumerate(parts)
            for j in range(len(body) - 1) if body[j] == f"done {i}" and body[j + 1] == "saved running"
        ]
        assert len(saved_completions) <= 1, f"call {i} completed and was saved twice"
        if saved_completions:
            later = [line for body, _ in parts[saved_completions[0]:] for line in body]
            first_saved = later.index("saved running", later.index(f"done {i}"))
            assert f"start {i}" not in later[first_saved:], f"call {i} ran again after its save"
        starts = sum(body.count(f"start {i}") for body, _ in parts)
        assert starts >= 1
        assert any(f"after {i}" in body for body, _ in parts)
    return {
        "processes": len(parts),
        "crashes": sum(crash is not None for _, crash in parts),
        "reruns": sum(body.count(f"start {i}") for body, _ in parts for i in range(n)) - n,
    }


def test_a_process_killed_before_its_first_marker_may_have_saved() -> None:
    """SIGKILL can land after the first save reached the disk and before its marker: the next
    process then continues after that save, though no process has a line to show it."""
    n = 2
    trace = canonical_trace(n)
    journal = ["attempt 0", "attempt 1", *trace[1:]]
    assert check_journal(journal, n, exact_markers=False)["processes"] == 2
    with pytest.raises(AssertionError, match="did not continue from the last save"):
        check_journal(journal, n, exact_markers=True)


def run_to_end(child: Child, *, max_attempts: int = 80) -> tuple[list[int], int]:
    for attempt in range(max_attempts):
        proc = child.run(attempt)
        if proc.returncode == 0:
            return finished_result(proc), attempt + 1
        assert proc.returncode == CRASH_CODE, f"child failed (rc {proc.returncode}):\n{proc.stderr}"
    raise AssertionError(f"instance did not finish in {max_attempts} processes")


def check_finished_instance_is_not_rerun(child: Child, n: int) -> None:
    before = child.lines()
    proc = child.run(999, p=0.0, forced=[])
    assert proc.returncode == 0, proc.stderr
    assert finished_result(proc) == expected_result(n)
    assert child.lines()[len(before):] == ["attempt 999", f"result {json.dumps(expected_result(n))}"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3, 6])
def test_random_exits(tmp_path: Path, seed: int) -> None:
    n = 6
    child = Child(tmp_path, n=n, seed=seed, p=0.1)
    result, processes = run_to_end(child)
    assert result == expected_result(n)
    counts = check_journal(child.lines(), n, exact_markers=True)
    assert counts["processes"] == processes
    assert counts["crashes"] == processes - 1 >= 1
    check_finished_instance_is_not_rerun(child, n)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22])
async def test_random_exits_consume_each_event_once(tmp_path: Path, seed: int) -> None:
    """The program waits for a "go" event after every call; n + 1 were published up front.
    Through every crash, each wait consumes exactly one of them: the instance never
    pauses (none lost) and exactly one is left at the end (none consumed twice)."""
    n = 6
    child = Child(tmp_path, n=n, seed=seed, p=0.1, waits=True)
    created = child.run("create", p=0.0, forced=[], create=True)  # events need an instance
    assert created.returncode == 0, created.stderr
    store = DiskStateStore(child.config["store"])
    backend = DurableBackend(store)
    for _ in range(n + 1):
        backend.publish_event(INSTANCE, "go")
    result, processes = run_to_end(child)
    assert result == expected_result(n)
    counts = check_journal(child.lines(), n, exact_markers=True)
    assert counts["crashes"] == processes - 1 >= 1
    assert [name for _, name in await store.events(INSTANCE)] == ["go"]
    check_finished_instance_is_not_rerun(child, n)


# One crash at every kind of point, each fired once (the journal remembers which fired).
EVERY_POINT = (
    "presave@start", "postsave@start",
    "enter 0", "started 0", "finished 0", "presave@done 0", "postsave@done 0", "between 0",
    "started 1", "postsave@done 1",
    "between 2", "presave@after 2", "postsave@after 2",
)


@pytest.mark.slow
def test_exit_at_every_kind_of_point(tmp_path: Path) -> None:
    n = 3
    child = Child(tmp_path, n=n, seed=0, p=0.0, forced=EVERY_POINT)
    result, processes = run_to_end(child)
    assert result == expected_result(n)
    lines = child.lines()
    assert sorted(line[6:] for line in lines if line.startswith("crash ")) == sorted(EVERY_POINT)
    counts = check_journal(lines, n, exact_markers=True)
    assert counts["crashes"] == len(EVERY_POINT) == processes - 1
    # Exactly what reran: the calls that died before their completion was saved.
    for i, reruns in ((0, 3), (1, 1), (2, 0)):
        assert lines.count(f"start {i}") == 1 + reruns, (i, lines)
    check_finished_instance_is_not_rerun(child, n)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_sigkill_at_random_times(tmp_path: Path, seed: int) -> None:
    """The parent SIGKILLs the child at random times (naps spread the kills out)."""
    n = 8
    child = Child(tmp_path, n=n, seed=seed, p=0.0, nap=0.02)
    rng = random.Random(seed)
    kills = 0
    for attempt in range(60):
        proc = subprocess.Popen(child.command(attempt), env=child.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "ready\n"
            if attempt < 4:  # the first runs always have more than this much napping left
                time.sleep(rng.uniform(0, 0.08))
                proc.send_signal(signal.SIGKILL)
            # Through the same reader as "ready": what it buffered after that line counts too.
            out, err = proc.stdout.read(), proc.stderr.read()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            continue
        assert proc.returncode == 0, err
        result = json.loads(out.splitlines()[-1])
        break
    else:
        raise AssertionError("instance did not finish")
    assert result == expected_result(n)
    assert kills >= 1
    counts = check_journal(child.lines(), n, exact_markers=False)
    assert counts["processes"] == attempt + 1
    # Temporary files of interrupted writes may remain, but never as state.
    store = Path(child.config["store"])
    visible = [p.name for p in store.iterdir() if not p.name.startswith(".")]
    assert len([name for name in visible if name.endswith(".state")]) == 1, visible
    assert not [name for name in visible if name.endswith(".tmp")], visible
    state = asyncio.run(DiskStateStore(store).load(INSTANCE))
    assert state["status"] == "completed"
    check_finished_instance_is_not_rerun(child, n)
