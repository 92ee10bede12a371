"""The `durable` command, run as a real process against a SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from durable import Cancelled, Client, SqliteStateStore, Worker, __version__, serialization
from durable.stores.base import RUNNING, TERMINATED, WAITING

FLOWS = '''
import asyncio

from durable import PauseForEventException, make_durable


async def double(x):
    await asyncio.sleep(0)
    return 2 * x


@make_durable
async def greet(name, punctuation="!"):
    raise PauseForEventException("allow")
    return f"hello {name}{punctuation}"


@make_durable
async def compute(x):
    return await double(x) + 1


@make_durable
async def broken(x):
    await double(x)
    raise ValueError(f"broken {x}")


def plain():
    return 1


async def order(item):
    return f"ordered {item}"


order_program = make_durable(order)  # its key, as `durable list` shows it: cli_flows:order
'''

# `refund` is the key of refund_program, and the variable holding another program.
AMBIGUOUS = '''
from durable import make_durable


async def refund(x):
    return x


async def pay(x):
    return x


refund_program = make_durable(refund)
refund = make_durable(pay)
'''


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """A directory with cli_flows.py (programs), cli_empty.py (none) and modules that cannot be
    imported, importable here too."""
    directory = tmp_path_factory.mktemp("cli_modules")
    (directory / "cli_flows.py").write_text(textwrap.dedent(FLOWS))
    (directory / "cli_empty.py").write_text("VALUE = 1\n")
    (directory / "cli_syntax.py").write_text("def broken(:\n    pass\n")
    (directory / "cli_raises.py").write_text("VALUE = 1\nraise RuntimeError('no config')\n")
    (directory / "cli_ambiguous.py").write_text(AMBIGUOUS)
    sys.path.insert(0, str(directory))
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))


@pytest.fixture
def flows(modules):
    return importlib.import_module("cli_flows")


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
async def client(tmp_path, url):
    store = SqliteStateStore(tmp_path / "cli.db")
    yield Client(store)
    await store.close()


def _env(modules: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_STORE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(modules), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def durable(modules: Path, cwd: Path, *args: str, stdin: bytes | None = None,
                  **env: str) -> tuple[int, str, str]:
    """Run ``python -m durable ARGS`` (given ``stdin``); return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", *args, cwd=cwd, env=_env(modules, **env),
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(stdin), 120)
    return process.returncode, out.decode(), err.decode()



def one_error_line(err: str, *fragments: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("durable: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


async def test_start_status_list_and_a_publish_from_another_process(
        modules, tmp_path, url, client, flows) -> None:
    cli = lambda *args: durable(modules, tmp_path, *args, "--store", url)  # noqa: E731
    assert await cli("start", "cli_flows:greet", '["Ada"]', "--id", "g-1") == (0, "g-1\n", "")
    assert await cli("start", "cli_flows:greet", '["Ada"]', "--id", "g-1") == (0, "g-1\n", "")
    code, _, err = await cli("start", "cli_flows:greet", '["Bob"]', "--id", "g-1")
    assert code == 1 and "'g-1' exists already" in err and "other arguments" in err

    code, out, _ = await cli("status", "g-1")
    assert code == 0
    assert "instance  g-1" in out and "program   cli_flows:greet" in out
    assert "status    running" in out
    code, out, _ = await cli("status", "g-1", "--json")
    assert json.loads(out)["status"] == RUNNING

    code, out, _ = await cli("list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATUS", "PROGRAM", "UPDATED"]
    assert [row.split()[:3] for row in rows] == [["g-1", "running", "cli_flows:greet"]]
    assert (await cli("list", "--status", "waiting"))[1].splitlines()[1:] == []

    code, _, err = await cli("result", "g-1")
    assert code == 1
    one_error_line(err, "no result yet", "running")

    worker = Worker(client.store, [flows.greet])
    task = asyncio.create_task(worker.run())
    try:
        await client.wait_for_status("g-1", WAITING, timeout=60)
        code, out, _ = await cli("status", "g-1")
        assert "status    waiting for allow" in out
        code, out, _ = await cli("list", "--status", "waiting", "--json")
        assert [json.loads(line)["instance_id"] for line in out.splitlines()] == ["g-1"]

        code, out, err = await cli("publish", "g-1", "allow", '{"by": "cli"}')
        assert (code, err) == (0, "")
        assert "allow" in out and "g-1" in out
        assert await client.result("g-1", timeout=60) == "hello Ada!"  # the first start's argument
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
    assert await cli("result", "g-1") == (0, '"hello Ada!"\n', "")


async def test_the_store_defaults_to_the_environment(modules, tmp_path, url, client) -> None:
    code, out, _ = await durable(modules, tmp_path, "start", "cli_flows:compute", "20", "--id",
                                 "c-env", DURABLE_STORE=url)
    assert (code, out) == (0, "c-env\n")
    assert (await client.status("c-env")).status == RUNNING


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
async def test_a_worker_process_runs_instances_and_stops_on_a_signal(
        modules, tmp_path, url, client, flows, signal_number) -> None:
    await client.start(flows.compute, 20, instance_id="c-1")
    await client.start(flows.greet, "Ada", punctuation="?", instance_id="g-2")
    await client.start(flows.broken, 3, instance_id="b-1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", "worker", "cli_flows", "--store", url,
        "--concurrency", "4", "--lease-seconds", "10", cwd=tmp_path, env=_env(modules),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert await client.result("c-1", timeout=60) == 41
        await client.wait_for_status("g-2", WAITING, timeout=60)
        await client.publish_event("g-2", "allow")  # from this process to the worker's
        assert await client.result("g-2", timeout=60) == "hello Ada?"
        with pytest.raises(ValueError, match="broken 3"):
            await client.result("b-1", timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal_number)
        _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert "stopped" in err.decode()

    code, _, err = await durable(modules, tmp_path, "result", "b-1", "--store", url)
    assert code == 1
    one_error_line(err, "failed", "ValueError", "broken 3")


async def test_terminate_and_result_wait(modules, tmp_path, url, client, flows) -> None:
    cli = lambda *args: durable(modules, tmp_path, *args, "--store", url)  # noqa: E731
    await client.start(flows.greet, "Ada", instance_id="t-1")
    code, _, err = await cli("result", "t-1", "--wait", "--timeout", "0.1")
    assert code == 1
    one_error_line(err, "did not end", "t-1")
    assert await cli("terminate", "t-1", "not needed") == (0, "terminated t-1\n", "")
    info = await client.status("t-1")
    assert (info.status, info.reason) == (TERMINATED, "not needed")
    assert "reason    not needed" in (await cli("status", "t-1"))[1]
    code, out, _ = await cli("terminate", "t-1", "again")
    assert code == 0 and "already ended" in out
    code, _, err = await cli("result", "t-1")
    assert code == 1
    one_error_line(err, "terminated", "not needed")


async def test_errors_are_one_line_with_the_right_exit_code(modules, tmp_path, url, client,
                                                            flows) -> None:
    await client.start(flows.compute, 1, instance_id="known")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (("status", "nope", "--store", url), 1, ["no instance 'nope'", "cli.db"]),
        (("publish", "nope", "allow", "--store", url), 1, ["no instance 'nope'"]),
        (("publish", "known", "allow", "{bad", "--store", url), 2, ["not valid JSON"]),
        (("list", "--store", "mysql://somewhere/db"), 2, ["unknown store URL"]),
        (("list", "--store", f"sqlite:///{blocker}/sub/x.db"), 1, []),
        (("status", "x", "--store", "postgresql://nobody@127.0.0.1:1/db"), 1, ["127.0.0.1"]),
        (("worker", "cli_empty", "--store", url), 2, ["cli_empty", "no durable program"]),
        (("worker", "cli_missing", "--store", url), 2, ["cannot import module 'cli_missing'"]),
        (("start", "cli_flows:compute", "[1, 2]", "--store", url), 2, ["bad arguments"]),
        (("start", "cli_flows:plain", "--store", url), 2, ["not a durable program"]),
        (("start", "cli_flows", "--store", url), 2, ["MODULE:NAME"]),
    ]
    for args, expected, fragments in cases:
        code, out, err = await durable(modules, tmp_path, *args)
        assert code == expected, (args, err)
        assert out == "", (args, out)
        one_error_line(err, *fragments)
    assert [i.instance_id for i in await client.list()] == ["known"]

    code, _, err = await durable(modules, tmp_path, "status")  # argparse: usage and exit 2
    assert code == 2 and "usage:" in err and "Traceback" not in err


async def test_the_console_script(modules, tmp_path, url, client) -> None:
    script = Path(sys.executable).with_name("durable")
    assert script.exists(), "pip install -e '.[dev]' installs the durable command"
    process = await asyncio.create_subprocess_exec(
        script, "start", "cli_flows:compute", '{"x": 4}', "--id", "s-1", "--store", url,
        cwd=tmp_path, env=_env(modules), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert (process.returncode, out, err) == (0, b"s-1\n", b"")
    assert (await client.status("s-1")).status == RUNNING


async def test_suspend_resume_and_cancel(modules, tmp_path, url, client, flows) -> None:
    cli = lambda *args: durable(modules, tmp_path, *args, "--store", url)  # noqa: E731
    await client.start(flows.greet, "Ada", instance_id="c-1")
    assert await cli("suspend", "c-1") == (0, "suspended c-1\n", "")
    assert "status    suspended" in (await cli("status", "c-1"))[1]
    code, out, _ = await cli("suspend", "c-1")
    assert code == 0 and "was not running or waiting" in out
    assert await cli("resume", "c-1") == (0, "resumed c-1\n", "")
    assert await cli("cancel", "c-1", "no longer wanted") == (0, "cancellation sent to c-1\n", "")
    assert [name for _, name in await client.store.events("c-1")] == ["durable:cancel"]
    await client.terminate("c-1", "done")
    code, out, _ = await cli("cancel", "c-1")
    assert code == 0 and "already ended" in out
    code, _, err = await cli("suspend", "nobody")
    assert code == 1
    one_error_line(err, "no instance 'nobody'")


DEPLOYED = '''
from durable import PauseForEventException, make_durable


async def add(x):
    raise PauseForEventException("add")
    return x + 1


async def wait(x):
    raise PauseForEventException("wait")
    return x


async def divide(x):
    return await half(x)


async def half(x):
    return x // 0


add_program, wait_program, divide_program = map(make_durable, (add, wait, divide))
'''


async def test_check_and_retry(modules, tmp_path, url, client) -> None:
    cli = lambda *args: durable(modules, tmp_path, *args, "--store", url)  # noqa: E731
    (tmp_path / "cli_deployed.py").write_text(DEPLOYED)
    sys.path.insert(0, str(tmp_path))
    try:
        deployed = importlib.import_module("cli_deployed")
    finally:
        sys.path.remove(str(tmp_path))
    await client.start(deployed.add_program, 1, instance_id="moves")
    await client.start(deployed.wait_program, 1, instance_id="stays")
    await client.start(deployed.divide_program, 4, instance_id="fails")
    worker = Worker(client.store, [deployed.add_program, deployed.wait_program,
                                   deployed.divide_program])
    running = asyncio.create_task(worker.run())
    await client.wait_for_status("moves", "waiting", timeout=30)
    await client.wait_for_status("stays", "waiting", timeout=30)
    with pytest.raises(ZeroDivisionError):
        await client.result("fails", timeout=30)
    worker.stop()
    await running
    assert await cli("check", "cli_deployed") == (0, (
        "moves  add()  line 6: unchanged\n"
        "stays  wait()  line 11: unchanged\n"
        "2 of 2 unfinished instance(s) can run on this code\n"), "")
    (tmp_path / "cli_deployed.py").write_text(DEPLOYED.replace("x + 1", "x + 2").replace(
        'Exception("wait")', 'Exception("later")').replace("x // 0", "x // 2"))
    code, out, err = await cli("check", "cli_deployed")
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == "moves  add()  line 6 -> line 6: moves"
    assert lines[1].startswith("stays  wait()  line 11: stays: the resume point "
                               "`raise PauseForEventException('wait')#1` (line 11) no longer exists")
    assert lines[2] == "1 of 2 unfinished instance(s) can run on this code; 1 cannot"
    code, out, _ = await cli("check", "cli_deployed", "--json")
    assert code == 1
    assert [(c["instance_id"], c["runs"]) for c in map(json.loads, out.splitlines())] == [
        ("moves", True), ("stays", False)]
    assert await cli("retry", "fails") == (0, "fails runs again from its last save\n", "")
    assert await cli("retry", "fails") == (0, "fails has not failed; nothing changed\n", "")
    code, _, err = await cli("retry", "nobody")
    assert code == 1
    one_error_line(err, "no instance 'nobody'")


async def test_the_result_of_a_cancelled_instance_gives_its_reason_once(
        modules, tmp_path, url, client, flows) -> None:
    cli = lambda *args: durable(modules, tmp_path, *args, "--store", url)  # noqa: E731
    await client.start(flows.greet, "Ada", instance_id="s1")
    worker = Worker(client.store, [flows.greet])
    task = asyncio.create_task(worker.run())
    try:
        await client.wait_for_status("s1", WAITING, timeout=60)
        assert await cli("cancel", "s1", "customer asked") == (0, "cancellation sent to s1\n", "")
        with pytest.raises(Cancelled) as caught:
            await client.result("s1", timeout=60)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
    assert str(caught.value) == "instance 's1' was cancelled: customer asked"
    assert (caught.value.instance_id, caught.value.reason) == ("s1", "customer asked")
    assert await cli("result", "s1") == (
        1, "", "durable: error: instance 's1' was cancelled: customer asked\n")


async def test_a_program_is_named_as_list_shows_it_or_by_its_variable(
        modules, tmp_path, url, client) -> None:
    cli = lambda *args: durable(modules, tmp_path, *args, "--store", url)  # noqa: E731
    assert await cli("start", "cli_flows:order", '["book"]', "--id", "o-1") == (0, "o-1\n", "")
    assert await cli("start", "cli_flows:order_program", '["pen"]', "--id", "o-2") == (
        0, "o-2\n", "")
    code, out, _ = await cli("list")
    assert code == 0
    assert sorted(row.split()[:3] for row in out.splitlines()[1:]) == [
        ["o-1", "running", "cli_flows:order"], ["o-2", "running", "cli_flows:order"]]
    code, out, err = await cli("check", "cli_flows:order")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "2 of 2 unfinished instance(s) can run on this code"
    assert await cli("check", "cli_flows:greet") == (  # that program's instances only
        0, "0 of 0 unfinished instance(s) can run on this code\n", "")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", "worker", "cli_flows:order", "--store", url,
        cwd=tmp_path, env=_env(modules), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert await client.result("o-1", timeout=60) == "ordered book"
        assert await client.result("o-2", timeout=60) == "ordered pen"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert "cli_flows:order" in err.decode()  # the worker's log names it so too


async def test_version(modules, tmp_path) -> None:
    assert await durable(modules, tmp_path, "--version") == (0, f"durable {__version__}\n", "")


async def test_arguments_and_payloads_from_a_file_or_standard_input(
        modules, tmp_path, url, client, flows) -> None:
    cli = lambda *args, **kw: durable(modules, tmp_path, *args, "--store", url, **kw)  # noqa: E731
    name = "A" * 10_000_000  # 10 MB: more than a command line can hold
    assert await cli("start", "cli_flows:greet", "-", "--id", "big",
                     stdin=json.dumps([name]).encode()) == (0, "big\n", "")
    (tmp_path / "payload.json").write_text(json.dumps({"blob": "B" * 10_000_000}))
    code, out, err = await cli("publish", "big", "allow", "@payload.json")
    assert (code, out, err) == (0, "published 'allow' to big\n", "")
    [(event_id, event)] = await client.store.events("big")
    assert event == "allow"
    payload = serialization.loads(await client.store.payload("big", event_id))
    assert payload == {"blob": "B" * 10_000_000}

    (tmp_path / "arguments.json").write_text('{"name": "Bo", "punctuation": "?"}')
    assert await cli("start", "cli_flows:greet", "@arguments.json", "--id", "small") == (
        0, "small\n", "")
    assert await cli("publish", "small", "allow", "-", stdin=b'[1, 2]') == (
        0, "published 'allow' to small\n", "")
    worker = Worker(client.store, [flows.greet])
    task = asyncio.create_task(worker.run())
    try:
        assert await client.result("big", timeout=60) == f"hello {name}!"
        assert await client.result("small", timeout=60) == "hello Bo?"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)

    (tmp_path / "bad.json").write_text("{oops")
    for args, stdin, fragments in [
        (("start", "cli_flows:greet", "@missing.json"), None,
         ["cannot read the arguments from the file 'missing.json'", "No such file"]),
        (("start", "cli_flows:greet", "@"), None, ["name the file of the arguments after @"]),
        (("publish", "small", "allow", "@bad.json"), None,
         ["the payload in the file 'bad.json' is not valid JSON"]),
        (("publish", "small", "allow", "-"), b"{oops",
         ["the payload on standard input is not valid JSON"]),
    ]:
        code, out, err = await cli(*args, stdin=stdin)
        assert (code, out) == (2, ""), (args, err)
        one_error_line(err, *fragments)


async def test_commands_on_existing_instances_never_create_a_store(modules, tmp_path, flows) -> None:
    missing = tmp_path / "typo" / "app.db"
    url = f"sqlite:///{missing}"
    for args in (("list",), ("status", "x"), ("result", "x"), ("check", "cli_flows"),
                 ("publish", "x", "go"), ("terminate", "x", "r"), ("cancel", "x"),
                 ("suspend", "x"), ("resume", "x"), ("retry", "x")):
        code, out, err = await durable(modules, tmp_path, *args, "--store", url)
        assert (code, out) == (1, ""), (args, err)
        one_error_line(err, f"no store at {url}: the file {missing} does not exist")
    assert not missing.parent.exists()
    empty = tmp_path / "empty"  # no --store, no $DURABLE_STORE: ./durable.db
    empty.mkdir()
    code, out, err = await durable(modules, empty, "list")
    assert (code, out) == (1, "")
    one_error_line(err, f"no store at sqlite:///durable.db: the file {empty / 'durable.db'} does "
                   "not exist")
    assert list(empty.iterdir()) == []

    # Commands that write still create it.
    assert await durable(modules, tmp_path, "start", "cli_flows:compute", "1", "--id", "c-1",
                         "--store", url) == (0, "c-1\n", "")
    code, out, _ = await durable(modules, tmp_path, "list", "--store", url)
    assert code == 0 and "c-1" in out


# Every exit code the README documents, for each family of commands. URL is the test's store
# (with the instance "known"), BLOCKED a path under a file, where no store can be made.
BAD_URLS = {"none": "sqlite://", "scheme": "mysql://somewhere/db", "file": "file://",
            "postgres": "postgresql://nobody@127.0.0.1:1/db?bogus=1"}
EXIT_CODES = [
    # A bad command line, told by argparse (its usage, exit 2).
    (("worker", "--store", "URL"), 2, ["usage:"]),
    (("start", "--store", "URL"), 2, ["usage:"]),
    (("start", "cli_flows:compute", "1", "--id", "", "--store", "URL"), 2,
     ["usage:", "must not be empty"]),
    (("start", "cli_flows:compute", "1", "--id", "a\tb", "--store", "URL"), 2,
     ["usage:", "control character"]),
    (("check", "--store", "URL"), 2, ["usage:"]),
    (("status", "--store", "URL"), 2, ["usage:"]),
    (("result", "known", "--timeout", "0", "--store", "URL"), 2, ["usage:"]),
    (("publish", "known", "--store", "URL"), 2, ["usage:"]),
    (("terminate", "known", "--store", "URL"), 2, ["usage:"]),
    (("list", "--limit", "0", "--store", "URL"), 2, ["usage:"]),
    ((), 2, ["usage:"]),
    # Bad JSON.
    (("start", "cli_flows:compute", "{bad", "--store", "URL"), 2, ["not valid JSON"]),
    (("publish", "known", "allow", "{bad", "--store", "URL"), 2, ["not valid JSON"]),
    # A bad store URL.
    (("worker", "cli_flows", "--store", "none"), 2, ["names no path"]),
    (("start", "cli_flows:compute", "1", "--store", "none"), 2, ["names no path"]),
    (("check", "cli_flows", "--store", "scheme"), 2, ["unknown store URL"]),
    (("status", "known", "--store", "none"), 2, ["names no path"]),
    (("list", "--store", "scheme"), 2, ["unknown store URL"]),
    (("publish", "known", "allow", "--store", "file"), 2, ["names no path"]),
    (("retry", "known", "--store", "postgres"), 2, ["invalid PostgreSQL connection string"]),
    # A module that cannot be imported, or that names no program.
    (("worker", "cli_syntax", "--store", "URL"), 2,
     ["cannot import module 'cli_syntax'", "SyntaxError", "line 1"]),
    (("worker", "cli_raises", "--store", "URL"), 2,
     ["cannot import module 'cli_raises'", "RuntimeError: no config", "cli_raises.py, line 2"]),
    (("worker", "cli_missing", "--store", "URL"), 2, ["cannot import module 'cli_missing'"]),
    (("worker", "cli_empty", "--store", "URL"), 2, ["cli_empty", "no durable program"]),
    (("worker", "cli_flows:nothing", "--store", "URL"), 2,
     ["cli_flows:nothing is not a durable program", "cli_flows:compute"]),
    (("start", "cli_syntax:main", "--store", "URL"), 2, ["cannot import module 'cli_syntax'"]),
    (("start", "cli_flows:plain", "--store", "URL"), 2, ["not a durable program"]),
    (("start", "cli_flows", "--store", "URL"), 2, ["MODULE:NAME"]),
    (("start", "cli_ambiguous:refund", "1", "--store", "URL"), 2,
     ["cli_ambiguous:refund is ambiguous", "cli_ambiguous:pay"]),
    (("start", "cli_flows:compute", "[1, 2]", "--store", "URL"), 2, ["bad arguments"]),
    (("check", "cli_raises", "--store", "URL"), 2, ["cannot import module 'cli_raises'"]),
    (("check", "cli_empty", "--store", "URL"), 2, ["no durable program"]),
    # An unknown instance.
    *[(command, 1, ["no instance 'nope'", "cli.db"]) for command in [
        ("status", "nope", "--store", "URL"), ("result", "nope", "--store", "URL"),
        ("publish", "nope", "allow", "--store", "URL"), ("terminate", "nope", "r", "--store", "URL"),
        ("cancel", "nope", "--store", "URL"), ("suspend", "nope", "--store", "URL"),
        ("resume", "nope", "--store", "URL"), ("retry", "nope", "--store", "URL")]],
    # A store that cannot be made or reached.
    (("worker", "cli_flows", "--store", "BLOCKED"), 1, ["a-file"]),
    (("start", "cli_flows:compute", "1", "--store", "BLOCKED"), 1, ["a-file"]),
    (("list", "--store", "BLOCKED"), 1, ["no store at"]),
    (("status", "x", "--store", "postgresql://nobody@127.0.0.1:1/db"), 1, ["127.0.0.1"]),
    # An instance with no result yet.
    (("result", "known", "--store", "URL"), 1, ["no result yet"]),
    (("result", "known", "--wait", "--timeout", "0.1", "--store", "URL"), 1, ["did not end"]),
]


@pytest.mark.parametrize("args, expected, fragments", EXIT_CODES,
                         ids=[" ".join(args) or "nothing" for args, _, _ in EXIT_CODES])
async def test_exit_codes_are_the_documented_ones(modules, tmp_path, url, client, flows, args,
                                                  expected, fragments) -> None:
    await client.start(flows.compute, 1, instance_id="known")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    stores = {"URL": url, "BLOCKED": f"sqlite:///{blocker}/sub/x.db", **BAD_URLS}
    args = tuple(stores.get(arg, arg) if previous == "--store" else arg
                 for previous, arg in zip(("", *args), args, strict=False))
    code, out, err = await durable(modules, tmp_path, *args)
    assert (code, out) == (expected, ""), err
    if fragments[0] == "usage:":  # argparse's usage, then what was wrong
        assert all(fragment in err for fragment in fragments) and "Traceback" not in err, err
    else:
        one_error_line(err, *fragments)
    assert [i.instance_id for i in await client.list()] == ["known"]


async def test_an_interrupted_command_exits_130(modules, tmp_path, url, client, flows) -> None:
    await client.start(flows.greet, "Ada", instance_id="w-1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durable", "result", "w-1", "--wait", "--store", url,
        cwd=tmp_path, env=_env(modules), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    database = str(tmp_path / "cli.db")
    fds = Path(f"/proc/{process.pid}/fd")
    while not any(os.path.realpath(fd) == database for fd in fds.iterdir()):
        await asyncio.sleep(0.05)  # until it has opened the store: it waits then
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, out) == (130, b""), err.decode()
    assert "Traceback" not in err.decode()
