"""Workers as real processes, under the faults they met: sync steps that block, a step longer
than the lease with two workers on one store, a large fan-out on one worker, and what a worker
tells its log.

Programs write what they did to files (a file per step run, with its start and end times), so
the tests count runs and compare intervals; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import datetime
from pathlib import Path

import pytest
from harness import eventually

from durable import Client, DurableBackend, InMemoryStateStore, make_durable, step
from durable.stores.base import ENDED, FAILED, FINISHED

ROOT = Path(__file__).resolve().parent.parent

PROGRAMS = '''
import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from durable import RetryPolicy, make_durable, map, step


def runs():
    return Path(os.environ["DURABLE_TEST_RUNS"])


def slow(name, seconds):
    """A sync step that blocks: one file per run, with its start and then its end."""
    run = runs() / f"{name}.{uuid.uuid4().hex}.run"
    started = time.time()
    run.write_text(json.dumps({"start": started}))
    time.sleep(seconds)
    run.write_text(json.dumps({"start": started, "end": time.time(), "pid": os.getpid()}))
    return name


async def sleeper(name, seconds):
    return await step(slow, name, seconds)


async def double(x):
    return 2 * x


async def fetch(x):
    await asyncio.sleep(0.001 * (x % 7))  # a call to a service, some slower than others
    return x


async def item(x):
    value = await step(fetch, x)  # saved: the branches end, and save, at different moments
    return await double(value) + 1


async def fan(n, concurrency):
    results = await map(item, range(n), concurrency=concurrency)
    return sum(results) + await double(1)


def flaky(name):
    """Fails at its first attempt."""
    marker = runs() / f"{name}.failed-once"
    if not marker.exists():
        marker.write_text("")
        raise ConnectionError(f"{name} is down")
    return "up"


async def retried(name):
    return await step(flaky, name, retry=RetryPolicy(max_attempts=3, initial_delay=0.2))


def broken(name):
    raise ValueError(f"{name} is broken")


async def doomed(name):
    return await step(broken, name)


sleeper_program = make_durable(sleeper)
fan_program = make_durable(fan)
retried_program = make_durable(retried)
doomed_program = make_durable(doomed)
'''


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """The module ``fault_programs``, importable here (for its programs' keys) and by workers."""
    directory = tmp_path_factory.mktemp("fault_programs")
    (directory / "fault_programs.py").write_text(textwrap.dedent(PROGRAMS))
    sys.path.insert(0, str(directory))
    try:
        import fault_programs
        yield fault_programs
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("fault_programs", None)


@pytest.fixture
def runs(tmp_path) -> Path:
    directory = tmp_path / "runs"
    directory.mkdir()
    return directory


def start_worker(programs, store_url: str, runs: Path, log: Path, *options: str) -> subprocess.Popen:
    """``durable worker fault_programs`` in a process of its own, its stderr in ``log``."""
    directory = Path(programs.__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(directory), str(ROOT)]),
               DURABLE_TEST_RUNS=str(runs))
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "durable", "worker", "fault_programs", "--store", store_url,
             *options], env=env, cwd=directory, stdout=subprocess.DEVNULL, stderr=stderr)


def stop(worker: subprocess.Popen) -> int:
    """SIGTERM, as an operator stops a worker; its exit code."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def step_runs(runs: Path, name: str) -> list[dict]:
    """The runs of ``slow(name, ...)`` so far (a run still going has no end yet)."""
    return [json.loads(path.read_text() or "{}") for path in runs.glob(f"{name}.*.run")]


async def ended(client: Client, ids: list[str]) -> bool:
    return all([(await client.status(i)).status in ENDED for i in ids])


# 1. Sync steps run off the event loop.

async def test_a_sync_step_longer_than_the_lease_runs_once_with_two_workers(
        programs, runs, tmp_path) -> None:
    """The step blocks for 5 s; leases last 2 s. The worker running it keeps renewing its
    lease meanwhile, so the other worker never takes the instance over and runs it again."""
    store_url = f"sqlite:///{tmp_path / 'durable.db'}"
    client = Client(store_url)
    await client.start(programs.sleeper_program, "long", 5, instance_id="long")
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    workers = [start_worker(programs, store_url, runs, log, "--lease-seconds", "2",
                            "--poll-interval", "0.1") for log in logs]
    try:
        # Done, or run a second time (the fault): either way there is no point waiting more.
        await eventually(lambda: len(step_runs(runs, "long")) > 1 or _finished(client, "long"),
                         120, "the long step ends or runs again", *workers)
        codes = [stop(worker) for worker in workers]
        text = "".join(log.read_text() for log in logs)
        assert len(step_runs(runs, "long")) == 1, text
        assert await client.result("long", wait=False) == "long"
        assert codes == [0, 0], text
    finally:
        for worker in workers:
            stop(worker)
        await client.close()


async def _finished(client: Client, instance_id: str) -> bool:
    return (await client.status(instance_id)).status == FINISHED


async def test_sync_steps_of_several_instances_run_at_once_on_one_worker(
        programs, runs, tmp_path) -> None:
    """Five instances, each in a 1 s sync step: the steps overlap (each starts before any
    ends), where run on the event loop they ran one after the other."""
    store_url = f"sqlite:///{tmp_path / 'durable.db'}"
    client = Client(store_url)
    ids = [f"nap-{n}" for n in range(5)]
    for instance_id in ids:
        await client.start(programs.sleeper_program, instance_id, 1, instance_id=instance_id)
    worker = start_worker(programs, store_url, runs, tmp_path / "worker.log")
    try:
        await eventually(lambda: ended(client, ids), 120, "the instances end", worker)
        assert [await client.result(i, wait=False) for i in ids] == ids
    finally:
        code = stop(worker)
        await client.close()
    assert code == 0, (tmp_path / "worker.log").read_text()
    intervals = [run for name in ids for run in step_runs(runs, name)]
    assert len(intervals) == len(ids)
    assert max(run["start"] for run in intervals) < min(run["end"] for run in intervals), intervals


BARRIER: threading.Barrier | None = None


def meet(name: str) -> tuple[str, bool]:
    """A sync step that returns only once another instance's step is running too."""
    assert BARRIER is not None
    BARRIER.wait()
    return name, threading.current_thread() is threading.main_thread()


async def _meets(name: str) -> tuple[str, bool]:
    return await step(meet, name)


meets = make_durable(_meets)


async def test_sync_steps_run_off_the_event_loop_in_process() -> None:
    """Without a worker too: two instances on one loop, each in a sync step that waits for
    the other's step to begin; neither runs on the loop's thread."""
    global BARRIER
    BARRIER = threading.Barrier(2, timeout=20)
    backend = DurableBackend(InMemoryStateStore())
    results = await asyncio.gather(meets("a", orchestration_backend=backend, instance_id="a"),
                                   meets("b", orchestration_backend=backend, instance_id="b"))
    assert sorted(results) == [("a", False), ("b", False)]


# 2. A large fan-out on one worker.

TROUBLE = ("never retrieved", "LeaseLost", "lease", "Traceback", "is closed", "ERROR", "WARNING")


async def test_a_large_map_on_one_worker_ends_without_lost_leases_or_unretrieved_errors(
        programs, runs, store_url, tmp_path) -> None:
    """A map of thousands of items per instance, on one worker: every instance finishes with
    the right result, and the worker's log says nothing went wrong (no lease lost, no save
    refused, no exception left unretrieved, nothing written to a closed store at exit). The
    last branches' saves were written after the instance's next saves, the last of which had
    ended the lease: they were refused, with no fiber left to hear it."""
    client = Client(store_url)
    ids = [f"fan-{n}" for n in range(4)]
    items = 2000
    for instance_id in ids:
        await client.start(programs.fan_program, items, 50, instance_id=instance_id)
    log = tmp_path / "worker.log"
    worker = start_worker(programs, store_url, runs, log)
    try:
        await eventually(lambda: ended(client, ids), 300, "the instances end", worker)
        results = [await client.result(i, wait=False) for i in ids]
    finally:
        code = stop(worker)
        await client.close()
    text = log.read_text()
    expected = sum(2 * x + 1 for x in range(items)) + 2
    assert results == [expected] * len(ids), text
    assert code == 0, text
    trouble = [line for line in text.splitlines() if any(word in line for word in TROUBLE)]
    assert trouble == [], text


# 3. What a worker logs.

@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_worker_logs_instances_and_failed_step_attempts(
        programs, runs, tmp_path, log_format) -> None:
    store_url = f"sqlite:///{tmp_path / 'durable.db'}"
    client = Client(store_url)
    await client.start(programs.retried_program, "r-1", instance_id="r-1")
    await client.start(programs.doomed_program, "d-1", instance_id="d-1")
    log = tmp_path / "worker.log"
    options = ["--log-format", "json"] if log_format == "json" else []  # text: the default
    worker = start_worker(programs, store_url, runs, log, *options)
    try:
        await eventually(lambda: ended(client, ["r-1", "d-1"]), 120, "the instances end", worker)
        assert (await client.status("d-1")).status == FAILED
        assert await client.result("r-1", wait=False) == "up"
    finally:
        code = stop(worker)
        await client.close()
    assert code == 0, log.read_text()
    records = _parse(log.read_text(), log_format)
    retried, doomed = programs.retried_program.key, programs.doomed_program.key

    def one(**fields) -> dict:
        found = [r for r in records if all(r.get(k) == v for k, v in fields.items())]
        assert len(found) == 1, (fields, records)
        return found[0]

    one(event="started", instance_id="r-1", program=retried)
    one(event="resumed", instance_id="r-1", program=retried)  # after the retry's timer
    one(event="finished", instance_id="r-1", program=retried)
    failed = one(event="attempt failed", instance_id="r-1", step="flaky", attempt=1)
    assert failed["error"] == "ConnectionError: r-1 is down"
    assert datetime.fromisoformat(failed["next_retry"]).tzinfo is not None
    one(event="started", instance_id="d-1", program=doomed)
    last = one(event="attempt failed", instance_id="d-1", step="broken", attempt=1)
    assert last["error"] == "ValueError: d-1 is broken" and last["next_retry"] is None
    assert one(event="failed", instance_id="d-1", program=doomed)["error"] == \
        "ValueError: d-1 is broken"


_INSTANCE = re.compile(r"instance (?P<instance_id>\S+) of (?P<program>\S+) "
                       r"(?P<event>started|resumed|finished|failed)(: (?P<error>.*))?$")
_ATTEMPT = re.compile(r"instance (?P<instance_id>\S+): step '(?P<step>[^']+)' attempt "
                      r"(?P<attempt>\d+) of \d+ failed: (?P<error>.*); "
                      r"(no attempt left|next attempt at (?P<next_retry>\S+))$")


def _parse(text: str, log_format: str) -> list[dict]:
    """The worker's log as records with an ``event`` (what happened) and its fields: from the
    JSON objects, or from the text lines (``time LEVEL logger: message``)."""
    records = []
    for line in text.splitlines():
        if log_format == "json":
            record = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= set(record), record
            datetime.fromisoformat(record["time"])
            message = record["message"]
        else:
            match = re.match(r"\S+ \S+ (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)$", line)
            assert match, line
            record = {"level": match["level"], "logger": match["logger"]}
            message = match["message"]
        instance = _INSTANCE.search(message)
        attempt = _ATTEMPT.search(message)
        if instance and record["logger"] == "durable.worker":
            record["event"] = instance["event"]
            if log_format == "text":
                record.update({k: v for k, v in instance.groupdict().items() if k != "event"})
        elif attempt and record["logger"] == "durable.step":
            record["event"] = "attempt failed"
            if log_format == "text":
                record.update(attempt.groupdict(), attempt=int(attempt["attempt"]))
        else:
            continue
        assert record["level"] == "INFO", record
        records.append(record)
    return records


def test_a_log_format_is_one_of_text_and_json() -> None:
    from durable.logs import configure_logging

    with pytest.raises(ValueError, match="log format must be one of text, json, got 'xml'"):
        configure_logging(format="xml")
    done = subprocess.run([sys.executable, "-m", "durable", "worker", "fault_programs",
                           "--log-format", "xml"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2 and "--log-format" in done.stderr and "'xml'" in done.stderr
