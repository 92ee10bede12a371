"""Crash tests of the durable primitives with real processes.

A child process runs a durable program, seed-style (``await program(...,
orchestration_backend=DurableBackend(store), instance_id=...)``), over a
``SqliteStateStore`` or a ``DiskStateStore``. In a loop, inside a
``try``/``finally``, the program runs

* a step with ``RetryPolicy(max_attempts=3, initial_delay=0.05, backoff=1)``
  whose function fails (raises) on seeded attempts;
* an ``at_most_once=True`` step, catching ``StepInterrupted``;
* ``await sleep(0.1)``;
* ``payload = await wait_for_event(f"go{i}")``.

Everything is written to a journal file (append + fsync) as it happens:

* ``process k t``                - child number ``k`` starts running the instance at ``t``;
* ``attempt <step> n t``         - a step function starts (``n``: its attempts journaled so far);
* ``fail <step> n t``            - ... and raises;
* ``done <step> n``              - ... and did its side effect (it returns right after);
* ``crash <step> before|after``  - the child dies there (``os._exit``);
* ``killed k``                   - written by the parent: it SIGKILLed child ``k``;
* ``after <step> <json>``        - the program got the outcome of the step;
* ``interrupted <step> a``       - the program caught ``StepInterrupted`` (attempt ``a``);
* ``sleeping i start`` / ``slept i start end wake`` - around ``await sleep(...)``;
* ``got i <json>``               - the payload ``wait_for_event`` returned;
* ``finally i``                  - the ``finally`` clause of iteration ``i``;
* ``pause <event> <until>``      - the instance paused (``PauseForEventException``);
* ``early rerun``                - the child calls the program again at once (a new backend
                                   on a new store object), before the timer it paused on
                                   is due: it must pause again, until the same time;
* ``result <json>``              - the instance returned.

Children die at seeded random points inside the step functions (before and
after their side effect; one point of an at-most-once step and one of a
retried step are forced, once each) and are SIGKILLed by the parent at random
times. A child that pauses exits with ``PAUSE_CODE`` and prints the pause;
the parent then publishes the awaited event (with a payload), or waits until
the timer is due, and lets the next child run. Some events are published
before the instance starts, some while it sleeps or waits to retry in the
iteration that waits for them, some once it waits; some are published twice,
and the second one ("spare") must be left unconsumed.

The journal of all processes is then checked: no retried step ran more than
``max_attempts`` times (attempts cut off by a crash count), no at-most-once
step more than once (an interrupted one raised ``StepInterrupted`` in the
program), no timer fired early (a sleep, a retry delay), every event's
payload arrived as published and was consumed exactly once, code after a
suspension point ran again only when its process died before the next save,
and the result is right.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness import created
from journaling import append_line

from durable import DiskStateStore, DurableBackend, SqliteStateStore, serialization

ROOT = Path(__file__).resolve().parent.parent
CRASH_CODE = 86
PAUSE_CODE = 3
INSTANCE = "primitive-crashes"
N = 3  # iterations of the program's loop
MAX_ATTEMPTS = 3
RETRY_DELAY = 0.05
SLEEP = 0.1
WARM = 2  # children started ahead of time

CHILD = textwrap.dedent('''
    import asyncio
    import json
    import os
    import random
    import sys

    from journaling import append_line
    import time

    from durable import (
        DiskStateStore,
        DurableBackend,
        PauseForEventException,
        RetryPolicy,
        SqliteStateStore,
        StepInterrupted,
        make_durable,
        sleep,
        step,
        wait_for_event,
    )

    CFG = {}
    RNG = random.Random()
    FIRED = set()  # forced crash points that already fired (in earlier processes)
    RETRY = RetryPolicy(max_attempts=%(max_attempts)d, initial_delay=%(delay)r, backoff=1)
    SLEEP = %(sleep)r


    def journal(line):
        append_line(CFG["journal"], line)


    def journal_lines():
        try:
            with open(CFG["journal"]) as file:
                return file.read().splitlines()
        except FileNotFoundError:
            return []


    def point(where):
        """Maybe die here: a forced crash point (once), or at random."""
        forced = where in CFG["forced"] and where not in FIRED
        if forced or RNG.random() < CFG["p"]:
            journal(f"crash {where}")
            os._exit(CFG["crash_code"])


    def nap():
        time.sleep(RNG.uniform(0, CFG["nap"]))


    def begin_attempt(name):
        n = 1 + sum(line.startswith(f"attempt {name} ") for line in journal_lines())
        journal(f"attempt {name} {n} {time.time()!r}")
        return n


    def flaky(i, name):
        """A retried step: fails on seeded attempts."""
        n = begin_attempt(name)
        point(f"{name} before")
        nap()
        if random.Random(f"{CFG['seed']}/{name}/{n}").random() < CFG["fail"]:
            journal(f"fail {name} {n} {time.time()!r}")
            raise ValueError(f"{name} attempt {n} failed")
        journal(f"done {name} {n}")
        point(f"{name} after")
        return 10 * i + n


    def once_only(i, name):
        """An at-most-once step."""
        n = begin_attempt(name)
        point(f"{name} before")
        nap()
        journal(f"done {name} {n}")
        point(f"{name} after")
        return 100 + i


    async def program(n):
        results = []
        for i in range(n):
            try:
                try:
                    value = await step(flaky, i, f"retry{i}", retry=RETRY, name=f"retry{i}")
                    retried = ["ok", value]
                except StepInterrupted as error:
                    retried = ["interrupted", error.attempt]
                except ValueError as error:
                    retried = ["failed", str(error), list(getattr(error, "__notes__", []))]
                journal(f"after retry{i} {json.dumps(retried)}")
                try:
                    once = ["ok", await step(once_only, i, f"once{i}", at_most_once=True,
                                             name=f"once{i}")]
                except StepInterrupted as error:
                    journal(f"interrupted once{i} {error.attempt}")
                    once = ["interrupted", error.attempt]
                journal(f"after once{i} {json.dumps(once)}")
                start = time.time()
                journal(f"sleeping {i} {start!r}")
                await sleep(SLEEP)
                end = time.time()
                journal(f"slept {i} {start!r} {end!r} {start + SLEEP!r}")
                payload = await wait_for_event(f"go{i}")
                journal(f"got {i} {json.dumps(payload)}")
                results.append([retried, once, payload])
            finally:
                journal(f"finally {i}")
        return results


    durable_program = make_durable(program)


    def open_store():
        if CFG["kind"] == "sqlite":
            return SqliteStateStore(CFG["store"])
        return DiskStateStore(CFG["store"])


    async def run():
        early = True  # one early rerun per process
        while True:
            backend = DurableBackend(open_store())  # a fresh backend, as a new process has
            try:
                result = await durable_program(CFG["n"], orchestration_backend=backend,
                                               instance_id=CFG["instance"])
            except PauseForEventException as pause:
                until = None if pause.until is None else pause.until.timestamp()
                journal(f"pause {pause.event} {until!r}")
                if early and pause.event is None and until - time.time() > 0.02:
                    early = False
                    journal("early rerun")  # before the timer is due: it must pause again
                    continue
                print(json.dumps({"event": pause.event, "until": until}), flush=True)
                return CFG["pause_code"]
            journal(f"result {json.dumps(result)}")
            print(json.dumps({"result": result}), flush=True)
            return 0


    def main():
        CFG.update(json.loads(sys.argv[1]))
        go = sys.stdin.readline()  # started ahead of time: wait for our turn
        if not go:
            return 0  # not needed
        CFG.update(json.loads(go))
        RNG.seed(f"{CFG['seed']}/{CFG['process']}")
        FIRED.update(line[6:] for line in journal_lines() if line.startswith("crash "))
        journal(f"process {CFG['process']} {time.time()!r}")
        print("ready", flush=True)
        return asyncio.run(run())
''') % {"max_attempts": MAX_ATTEMPTS, "delay": RETRY_DELAY, "sleep": SLEEP}


def make_store(kind: str, path: Path) -> SqliteStateStore | DiskStateStore:
    return SqliteStateStore(path) if kind == "sqlite" else DiskStateStore(path)


class Child:
    def __init__(self, tmp_path: Path, kind: str, seed: str, forced: list[str]) -> None:
        self.module = tmp_path / "prim_child.py"
        self.module.write_text(CHILD)
        self.journal = tmp_path / "journal.txt"
        self.store_path = tmp_path / ("store.db" if kind == "sqlite" else "store")
        self.config = {
            "journal": str(self.journal), "store": str(self.store_path), "kind": kind,
            "n": N, "seed": seed, "p": 0.04, "fail": 0.3, "nap": 0.02, "forced": forced,
            "crash_code": CRASH_CODE, "pause_code": PAUSE_CODE, "instance": INSTANCE,
        }
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), str(tmp_path), str(ROOT / "tests"),
                          os.environ.get("PYTHONPATH")])))

        self.warm: deque[subprocess.Popen[bytes]] = deque()

    def start(self, process: int) -> subprocess.Popen[bytes]:
        """Child number ``process``, running the instance from now on.

        Children are started ahead of time (importing durable and compiling the
        program take about half a second of CPU), ``WARM`` of them beside the one that
        runs; each waits for its go line before it touches the store, so only one
        child runs the instance at a time. Unbuffered pipes: reading the ready line
        must not swallow what follows it (``communicate`` reads the pipe itself).
        """
        while len(self.warm) < 1 + WARM:
            code = "import sys, prim_child; sys.exit(prim_child.main())"
            self.warm.append(subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(self.config)], env=self.env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0))
        proc = self.warm.popleft()
        proc.stdin.write(json.dumps({"process": process}).encode() + b"\n")
        return proc

    def close(self) -> None:
        while self.warm:
            proc = self.warm.popleft()
            proc.kill()
            proc.communicate()

    def lines(self) -> list[str]:
        text = self.journal.read_text()
        assert text.endswith("\n"), f"torn journal line: {text[-80:]!r}"
        return text.splitlines()


@dataclass
class Events:
    """What the parent published: payloads per event name, in order of publication."""

    backend: DurableBackend
    rng: random.Random
    spares: set[int]
    published: dict[str, list[dict]] = field(default_factory=dict)

    def publish(self, i: int) -> None:
        name = f"go{i}"
        assert name not in self.published
        self.published[name] = []
        for spare in ([False, True] if i in self.spares else [False]):
            payload = {"i": i, "token": self.rng.randrange(10**9), "spare": spare}
            self.backend.publish_event(INSTANCE, name, payload)
            self.published[name].append(payload)

    def payload(self, i: int) -> dict:
        return self.published[f"go{i}"][0]


@dataclass
class Driven:
    result: list
    processes: int
    kills: int
    published: Events


def child_program(child: Child) -> types.ModuleType:
    """The children's module, imported here under its own name (the program's key has it)."""
    spec = importlib.util.spec_from_file_location("prim_child", child.module)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["prim_child"] = module
    spec.loader.exec_module(module)
    return module


def drive(child: Child, store, seed: str, *, kill_chance: float, max_kills: int) -> Driven:
    """Run children until the instance finishes: publish events, wait for timers, kill some."""
    rng = random.Random(f"parent/{seed}")
    # When each go{i} is published: before the instance starts ("start"), while it sleeps
    # or waits to retry in iteration i ("before"), or once it waits for go{i} ("late").
    modes = [rng.choice(["start", "before", "late"]) for _ in range(N)]
    if "late" not in modes:
        modes[rng.randrange(N)] = "late"
    if not {"start", "before"} & set(modes):
        modes[rng.randrange(N)] = "start"
    events = Events(DurableBackend(store), rng, {i for i in range(N) if rng.random() < 0.5})
    if "start" in modes:  # events go to an instance that exists: create it, as a start would
        asyncio.run(created(child_program(child).durable_program, DurableBackend(store),
                            INSTANCE, N))
    for i in range(N):
        if modes[i] == "start":
            events.publish(i)
    kills = 0
    for process in range(80):
        proc = child.start(process)
        try:
            ready = proc.stdout.readline()
            assert ready == b"ready\n", f"child {process} did not start: {proc.communicate()[1]}"
            if kills < max_kills and rng.random() < kill_chance:
                time.sleep(rng.uniform(0, 0.06))
                proc.send_signal(signal.SIGKILL)
            out, err = (data.decode() for data in proc.communicate(timeout=60))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == -signal.SIGKILL:
            append_line(str(child.journal), f"killed {process}")
            kills += 1
            continue
        assert proc.returncode in (0, PAUSE_CODE, CRASH_CODE), (
            f"child {process} failed (rc {proc.returncode}):\n{err}")
        assert "Traceback" not in err, f"child {process}:\n{err}"
        if proc.returncode == CRASH_CODE:
            continue
        report = json.loads(out.splitlines()[-1])
        if proc.returncode == 0:
            return Driven(report["result"], process + 1, kills, events)
        event, until = report["event"], report["until"]
        if event is None:  # a timer: let the next child go when it is due
            assert until is not None
            # The instance is in the last iteration the journal shows, and it has not
            # waited for that iteration's event yet if the event is not published.
            i = current_iteration(child.lines())
            if modes[i] == "before" and f"go{i}" not in events.published:
                events.publish(i)
            time.sleep(max(0.0, until - time.time()))
            continue
        assert until is None, report
        i = int(event.removeprefix("go"))
        assert event not in events.published, (
            f"child {process} paused for {event}, which was already published: lost")
        events.publish(i)
    raise AssertionError("the instance did not finish in 80 processes")


# --- reading the journal -----------------------------------------------------------------------
def current_iteration(lines: list[str]) -> int:
    started = [int(line.split(" ")[1].removeprefix("retry")) for line in lines
               if line.startswith("attempt retry")]
    return max(started, default=0)


@dataclass
class Line:
    index: int  # in the journal
    segment: int  # the process that wrote it (index into the segments)
    text: str

    @property
    def words(self) -> list[str]:
        return self.text.split(" ")


@dataclass
class Segment:
    process: int
    lines: list[Line] = field(default_factory=list)
    died: str | None = None  # "crash <where>" or "killed"
    killed: bool = False


def parse(lines: list[str]) -> tuple[list[Line], list[Segment]]:
    parsed: list[Line] = []
    segments: list[Segment] = []
    for index, text in enumerate(lines):
        word, _, rest = text.partition(" ")
        if word == "process":
            segments.append(Segment(int(rest.split(" ")[0])))
            continue
        assert segments, f"journal does not start with a process: {text!r}"
        segment = segments[-1]
        if word == "killed":  # (the kill may come as it exits at a crash point)
            assert int(rest) == segment.process and not segment.killed, text
            segment.killed = True
            segment.died = segment.died or "killed"
            continue
        assert segment.died is None, f"a line after the child died ({segment.died}): {text!r}"
        if word == "crash":
            segment.died = text
        line = Line(index, len(segments) - 1, text)
        segment.lines.append(line)
        parsed.append(line)
    return parsed, segments


def later_in_segment(segments: list[Segment], line: Line) -> list[str]:
    return [other.text for other in segments[line.segment].lines if other.index > line.index]


def check_retried_step(lines: list[Line], segments: list[Segment], i: int, outcome: list) -> int:
    """The retried step of iteration ``i``: attempts, the delays between them, its outcome."""
    name = f"retry{i}"
    attempts = [line for line in lines if line.text.startswith(f"attempt {name} ")]
    assert 1 <= len(attempts) <= MAX_ATTEMPTS, (
        f"{name} ran {len(attempts)} times (max_attempts={MAX_ATTEMPTS})",
        [line.text for line in attempts])
    fails = {int(line.words[2]): float(line.words[3])
             for line in lines if line.text.startswith(f"fail {name} ")}
    after = [line for line in lines if line.text.startswith(f"after {name} ")]
    assert after, f"the program never got the outcome of {name}"
    assert all(json.loads(line.text.split(" ", 2)[2]) == outcome for line in after), (
        outcome, [line.text for line in after])
    for k, attempt in enumerate(attempts, start=1):
        assert attempt.words[2] == str(k)
        assert attempt.index < after[0].index
        if k == len(attempts):
            continue
        # It was retried, so it failed, or its process died before the outcome was saved.
        rest = later_in_segment(segments, attempt)
        assert k in fails or (segments[attempt.segment].died is not None
                              and not any(text.startswith(f"after {name} ") for text in rest)), (
            f"attempt {k} of {name} was retried although it succeeded", rest)
        if k in fails:  # the next attempt waited for the retry delay
            started = float(attempts[k].words[3])
            assert started >= fails[k] + RETRY_DELAY, (
                f"{name}: attempt {k + 1} started {fails[k] + RETRY_DELAY - started:.4f} s early")
    last = len(attempts)
    kind = outcome[0]
    if kind == "ok":
        assert f"done {name} {last}" in [line.text for line in lines]
        assert outcome[1] == 10 * i + last, (outcome, "not the value of the last attempt")
    elif kind == "failed":
        assert last in fails and outcome[1] == f"{name} attempt {last} failed", outcome
        assert outcome[2] == [f"step {name!r} failed at attempt {MAX_ATTEMPTS} of {MAX_ATTEMPTS}"]
    else:
        assert outcome == ["interrupted", MAX_ATTEMPTS], outcome
        # Its last attempt was cut off: some process died after the step began.
        assert any(segment.died is not None
                   for segment in segments[attempts[0].segment:after[0].segment])
    return len(attempts)


def check_at_most_once_step(lines: list[Line], segments: list[Segment], i: int,
                            outcome: list) -> bool:
    """The at-most-once step of iteration ``i``; returns whether it was interrupted."""
    name = f"once{i}"
    texts = [line.text for line in lines]
    attempts = [line for line in lines if line.text.startswith(f"attempt {name} ")]
    assert len(attempts) <= 1, (f"the at-most-once step {name} ran {len(attempts)} times",
                                [line.text for line in attempts])
    after = [line for line in lines if line.text.startswith(f"after {name} ")]
    assert after, f"the program never got the outcome of {name}"
    assert all(json.loads(line.text.split(" ", 2)[2]) == outcome for line in after), (
        outcome, [line.text for line in after])
    interrupted = [line for line in lines if line.text.startswith(f"interrupted {name} ")]
    if outcome[0] == "ok":
        assert outcome[1] == 100 + i
        assert len(attempts) == 1 and f"done {name} 1" in texts
        assert not interrupted, "the program saw StepInterrupted for a step that succeeded"
        assert not any(text.startswith(f"crash {name} ") for text in texts), (
            f"{name} died inside its function, yet its result was delivered")
        return False
    assert outcome == ["interrupted", 1], outcome
    assert interrupted, f"{name} was interrupted but the program never saw StepInterrupted"
    assert all(line.text == f"interrupted {name} 1" for line in interrupted)
    if attempts:
        attempt = attempts[0]
        assert segments[attempt.segment].died is not None, (
            f"{name} was interrupted although its process did not die")
        rest = later_in_segment(segments, attempt)
        assert not any(text.startswith(f"after {name} ") for text in rest)
        assert attempt.index < interrupted[0].index
    return True


def check_timers(lines: list[Line]) -> tuple[int, int]:
    """No timer fired early; returns (sleeps completed, early reruns that paused again)."""
    slept = 0
    for line in lines:
        if line.text.startswith("slept "):
            _, _i, start, end, wake = line.words
            assert float(wake) == float(start) + SLEEP
            assert float(end) >= float(wake), f"sleep fired {float(wake) - float(end):.4f} s early"
            slept += 1
    # A timer is set for the right time: a sleep's pauses come SLEEP after its start, a retry's
    # RETRY_DELAY after the failed attempt.
    for k, line in enumerate(lines):
        if line.text.startswith("sleeping "):
            due = float(line.words[2]) + SLEEP
        elif line.text.startswith("fail "):
            due = float(line.words[3]) + RETRY_DELAY
        else:
            continue
        after = lines[k + 1] if k + 1 < len(lines) else None
        if after is None or after.segment != line.segment:
            continue  # the process died before it paused
        if line.text.startswith("fail ") and after.text.startswith("after "):
            continue  # its last attempt: the error was raised in the program
        assert after.text.startswith("pause None "), (line.text, after.text)
        assert float(after.words[2]) >= due, (
            f"{line.text!r}: the timer was set {due - float(after.words[2]):.4f} s early")
    # After a timer's pause, the next attempt or completed sleep happens once it is due.
    for k, line in enumerate(lines):
        if not line.text.startswith("pause None "):
            continue
        until = float(line.words[2])
        for later in lines[k + 1:]:
            if later.text.startswith(("attempt ", "slept ")):  # when it started / ended
                moment = float(later.words[3])
            else:
                continue
            assert moment >= until, f"{later.text!r}: {until - moment:.4f} s before {until}"
            break
    repaused = 0
    for k, line in enumerate(lines):
        if line.text == "early rerun":
            before, after = lines[k - 1], lines[k + 1] if k + 1 < len(lines) else None
            assert before.text.startswith("pause None ")
            if after is None or after.segment != line.segment:
                continue  # killed during the rerun
            if after.text.startswith("pause "):
                assert after.text == before.text, (
                    "resumed before its timer was due, it paused again with another time",
                    before.text, after.text)
                repaused += 1
    return slept, repaused


# Lines the program writes between two saves, outside the step functions.
RERUNNABLE = ("after ", "interrupted ", "sleeping ", "slept ", "got ", "finally ")


def check_reruns(lines: list[Line], segments: list[Segment]) -> None:
    """Code after a suspension point runs again only if its process died before the next
    save: a process that paused or returned saved after every line it wrote, so what it
    wrote never runs again (a step's outcome, an event consumed, a timer that fired)."""
    seen: dict[str, list[Line]] = {}
    for line in lines:
        if line.text.startswith(RERUNNABLE):
            seen.setdefault(" ".join(line.words[:2]), []).append(line)
    for key, occurrences in seen.items():
        for line in occurrences[:-1]:
            segment = segments[line.segment]
            assert segment.died is not None, (
                f"{key!r} ran again, although process {segment.process} saved after it",
                [other.text for other in occurrences])


def check_journal(child: Child, driven: Driven) -> dict[str, int]:
    lines, segments = parse(child.lines())
    assert len(segments) == driven.processes
    assert sum(segment.killed for segment in segments) == driven.kills
    result = driven.result
    assert len(result) == N, result
    counts = {"processes": driven.processes, "kills": driven.kills,
              "crashes": sum(segment.died not in (None, "killed") for segment in segments),
              "attempts": 0, "interrupted": 0}
    texts = [line.text for line in lines]
    for i, (retried, once, payload) in enumerate(result):
        counts["attempts"] += check_retried_step(lines, segments, i, retried)
        counts["interrupted"] += check_at_most_once_step(lines, segments, i, once)
        # The payload published (first) for go{i}, each time the program got it.
        published = driven.published.payload(i)
        assert payload == published, (i, payload, published)
        got = [json.loads(text.split(" ", 2)[2]) for text in texts if text.startswith(f"got {i} ")]
        assert got and all(value == published for value in got), (i, got, published)
        assert f"finally {i}" in texts
        assert any(text.startswith(f"slept {i} ") for text in texts)
    check_reruns(lines, segments)
    slept, repaused = check_timers(lines)
    assert slept >= N
    assert repaused >= 1, "no early rerun paused again: the early-resume check never ran"
    counts["repaused"] = repaused
    last = segments[-1]
    assert last.died is None and last.lines[-1].text == f"result {json.dumps(result)}"
    return counts


def forced_points(seed: str) -> list[str]:
    """One at-most-once step and one retried step die once each (before or after its effect)."""
    rng = random.Random(f"forced/{seed}")
    return [f"once{rng.randrange(N)} {rng.choice(['before', 'after'])}",
            f"retry{rng.randrange(N)} {rng.choice(['before', 'after'])}"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "disk"])
@pytest.mark.parametrize("seed", [1, 2])
def test_primitives_survive_crashes_and_kills(tmp_path: Path, kind: str, seed: int) -> None:
    scenario = f"{kind}-{seed}"  # each store gets scenarios of its own
    child = Child(tmp_path, kind, scenario, forced_points(scenario))
    store = make_store(kind, child.store_path)
    try:
        driven = drive(child, store, scenario, kill_chance=0.2, max_kills=2)
        counts = check_journal(child, driven)
        assert counts["crashes"] >= 1  # the forced at-most-once point, at least
        # Every event was consumed exactly once: only the spares (second publications) are left.
        left = asyncio.run(store.events(INSTANCE))
        spares = sorted(f"go{i}" for i in driven.published.spares)
        assert sorted(name for _, name in left) == spares, (left, spares)
        for event_id, name in left:
            blob = asyncio.run(store.payload(INSTANCE, event_id))
            assert serialization.loads(blob) == driven.published.published[name][1]
        state = asyncio.run(store.load(INSTANCE))
        assert state["status"] == "completed"
        assert serialization.loads(state["result"]) == driven.result
    finally:
        child.close()
        if isinstance(store, SqliteStateStore):
            asyncio.run(store.close())
    print(scenario, counts)
