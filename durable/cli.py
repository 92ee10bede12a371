"""The ``durable`` command: run workers, start instances, publish events, look at instances.

Every command takes ``--store URL`` (default: ``$DURABLE_STORE``, else SQLite
in ``./durable.db``); only ``start`` and ``worker`` create a store that is not
there: the others act on instances that must exist already. Errors print one line to stderr, with the exit codes of the
README's table: 2 for a bad command line (bad arguments, JSON or store URL, a
module that cannot be imported, a name that is no durable program), 1 when the
operation failed (no store at the path, an unknown instance, an unreachable
store, a failed instance's result, ``check`` finding an instance that cannot
run), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from . import showing
from .client import Client, InstanceNotEnded
from .deploy_check import HOOK, MOVES, UNCHANGED, FrameCheck
from .errors import (
    Cancelled,
    DurableError,
    IncompatibleStateError,
    InstanceTerminated,
    StoreError,
    StoreURLError,
    UnknownInstanceError,
    UnverifiedDataError,
)
from .ids import check_instance_id
from .logs import FORMATS, configure_logging
from .program import DurableProgram
from .stores.base import ENDED, STATUSES, InstanceInfo
from .stores.urls import DEFAULT_URL
from .version import __version__
from .worker import Worker

USAGE, FAILED = 2, 1


class UsageError(Exception):
    """The command line is wrong (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = _parser().parse_args(argv)
    try:
        with _interrupts():
            return asyncio.run(args.command(args))
    except KeyboardInterrupt:
        return 130
    except (UsageError, StoreURLError) as error:
        return _error(str(error), USAGE)
    except DurableError as error:  # StoreError too: no store at the path, or it does not answer
        return _error(str(error), FAILED)
    except Exception as error:
        return _error(f"{type(error).__name__}: {error}", FAILED)


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt wherever the command stands, as in a plain Python
    program. asyncio.run's own handler only cancels the main task, and a command waiting on a
    store (``result --wait``) was seen, under load, to go on waiting when that cancellation was
    lost. The worker installs its own graceful handlers over this one while it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _error(message: str, code: int) -> int:
    print(f"durable: error: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", default=os.environ.get("DURABLE_STORE"), metavar="URL",
                       help=f"store URL (default: $DURABLE_STORE, else {DEFAULT_URL})")
    store.set_defaults(create=False)  # only start and worker make a store that is not there
    parser = argparse.ArgumentParser(
        prog="durable", description="Run workers, start instances, publish events, look at instances.")
    parser.add_argument("--version", action="version", version=f"durable {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", parents=[store], help="run the instances of programs",
                                 description="Import MODULEs, collect every durable program they "
                                 "define (or the one MODULE:NAME names), and run their instances "
                                 "until SIGINT or SIGTERM (a second signal stops at once; unsaved "
                                 "work then runs again).")
    worker.add_argument("modules", nargs="+", metavar="MODULE", help=_PROGRAMS_HELP)
    worker.add_argument("--concurrency", type=_positive(int), default=100, metavar="N",
                        help="instances run at once (default 100)")
    worker.add_argument("--lease-seconds", type=_positive(float), default=30.0, metavar="S",
                        help="how long a claim lasts without renewal (default 30)")
    worker.add_argument("--poll-interval", type=_positive(float), default=1.0, metavar="S",
                        help="longest wait between looks at the store (default 1)")
    worker.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    worker.add_argument("--log-format", default="text", choices=FORMATS,
                        help="text lines, or one JSON object a line with the fields of each "
                        "record: time, level, logger, message, instance_id, program, step, "
                        "attempt, error, next_retry... (default text)")
    worker.set_defaults(command=_worker, create=True)

    start = commands.add_parser("start", parents=[store], help="start an instance",
                                description="Create an instance for a worker to run; prints its id.")
    start.add_argument("program", metavar="MODULE:NAME",
                       help="a durable program, as `durable list` shows it (app.flows:order) or "
                       "by the variable that holds it (app.flows:order_program)")
    start.add_argument("arguments", nargs="?", metavar="JSON",
                       help="its arguments: a JSON array (positional), object (keywords) or "
                       f"any other JSON value (one argument); {_JSON_HELP}")
    start.add_argument("--id", dest="instance_id", type=_instance_id,
                       help="instance id (default: a new UUID)")
    start.set_defaults(command=_start, create=True)

    status = commands.add_parser("status", parents=[store], help="show an instance")
    status.add_argument("instance_id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(command=_status)

    show = commands.add_parser(
        "show", parents=[store], help="show where an instance stands, at source level",
        description="The instance's stack as its last pause or end saved it, like a "
        "debugger's backtrace: each frame's file, line and function, the lines around it, its "
        "variables (bounded; secrets as ***); what it waits for; how it ended. Reads what the "
        "store keeps beside the state: nothing is unpickled.")
    show.add_argument("instance_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(command=_show)

    past = commands.add_parser(
        "history", parents=[store], help="what happened to an instance, in order",
        description="The instance's history: created, steps and their attempts, events, "
        "timers, pauses, what clients did, how it ended. Reads plain columns: nothing is "
        "unpickled.")
    past.add_argument("instance_id", metavar="ID")
    past.add_argument("--follow", action="store_true",
                      help="keep printing new entries until the instance ends")
    past.add_argument("--json", action="store_true", help="print JSON, one entry a line")
    past.set_defaults(command=_history)

    publish = commands.add_parser("publish", parents=[store], help="publish an event to an instance")
    publish.add_argument("instance_id", metavar="ID")
    publish.add_argument("event", metavar="EVENT")
    publish.add_argument("payload", nargs="?", metavar="JSON", help=f"payload, as JSON; {_JSON_HELP}")
    publish.set_defaults(command=_publish)

    listing = commands.add_parser("list", parents=[store], help="list instances, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--limit", type=_positive(int), default=1000)
    listing.add_argument("--json", action="store_true", help="print JSON, one object a line")
    listing.set_defaults(command=_list)

    result = commands.add_parser("result", parents=[store], help="print an instance's result",
                                 description="Print the result as JSON (repr if it is not JSON); a "
                                 "failed or terminated instance prints its error and exits 1.")
    result.add_argument("instance_id", metavar="ID")
    result.add_argument("--wait", action="store_true", help="wait until the instance ends")
    result.add_argument("--timeout", type=_positive(float), metavar="S")
    result.set_defaults(command=_result)

    terminate = commands.add_parser("terminate", parents=[store], help="stop an instance for good")
    terminate.add_argument("instance_id", metavar="ID")
    terminate.add_argument("reason")
    terminate.set_defaults(command=_change, action="terminate")

    cancel = commands.add_parser("cancel", parents=[store],
                                 help="raise Cancelled in an instance where it waits")
    cancel.add_argument("instance_id", metavar="ID")
    cancel.add_argument("reason", nargs="?")
    cancel.set_defaults(command=_change, action="cancel")

    check = commands.add_parser(
        "check", parents=[store], help="can unfinished instances run on this code?",
        description="Import MODULEs (the code about to be deployed) and compare every unfinished "
        "instance of their programs with it: per frame, unchanged, moves (old line -> new line), "
        "a migration hook decides, or stays, and why. Reads only what the store keeps beside "
        "each state: no state is loaded, no instance code runs. Exit status 0 only if every "
        "instance can run.")
    check.add_argument("modules", nargs="+", metavar="MODULE", help=_PROGRAMS_HELP)
    check.add_argument("--json", action="store_true", help="print JSON, one object a line")
    check.set_defaults(command=_check)

    resign = commands.add_parser(
        "resign", parents=[store], help="sign every state and payload with the first key",
        description="Seal every state and event payload anew with the first key of "
        "DURABLE_SECRET_KEY (after a rotation: then the old keys can be dropped). A blob that "
        "does not verify under any key is left as it is, and named; exit status 0 only if "
        "none was left.")
    resign.add_argument("--adopt-unsigned", action="store_true",
                        help="also sign what was saved without a signature (by a store with no "
                        "key), taking it on trust")
    resign.set_defaults(command=_resign)

    for name, verb in (("suspend", "stop scheduling an instance"),
                       ("resume", "schedule a suspended instance again"),
                       ("retry", "run a failed instance again from its last save")):
        control = commands.add_parser(name, parents=[store], help=verb)
        control.add_argument("instance_id", metavar="ID")
        control.set_defaults(command=_change, action=name)
    return parser


_PROGRAMS_HELP = "module to import (a.b.c): all its programs; or one program, MODULE:NAME"
_JSON_HELP = "@FILE reads it from a file, - from standard input"


def _instance_id(text: str) -> str:
    """A valid id, or a bad command line (exit 2) saying which rule it breaks."""
    try:
        return check_instance_id(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_instance_id.__name__ = "instance id"  # argparse names the type in its messages


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


async def _with_client(args: argparse.Namespace, act: Callable[[Client], Awaitable[int]]) -> int:
    client = Client(args.store, create=args.create)
    try:
        return await act(client)
    finally:
        await client.close()


# Commands.
async def _worker(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format, sys.stderr)
    programs = _programs_of(args.modules)
    worker = Worker(args.store, programs, concurrency=args.concurrency,
                    lease_seconds=args.lease_seconds, poll_interval=args.poll_interval)
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        worker.stop(now=signals > 1)

    loop = asyncio.get_running_loop()
    installed = []
    for number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # platforms without them
            loop.add_signal_handler(number, on_signal)
            installed.append(number)
    try:
        await worker.run()
    finally:
        for number in installed:
            loop.remove_signal_handler(number)
    return 0


async def _start(args: argparse.Namespace) -> int:
    program = _program(args.program)
    value = _json(args.arguments, "arguments") if args.arguments is not None else []
    positional, keywords = ((value, {}) if isinstance(value, list) else
                            ([], value) if isinstance(value, dict) else ([value], {}))

    async def act(client: Client) -> int:
        try:
            handle = await client.start(program, *positional, instance_id=args.instance_id,
                                        **keywords)
        except TypeError as error:
            raise UsageError(f"bad arguments for {args.program}: {error}") from None
        print(handle.instance_id)
        return 0
    return await _with_client(args, act)


async def _status(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        info = await client.status(args.instance_id)
        if args.json:
            print(json.dumps(_as_dict(info)))
            return 0
        rows = _info_rows(info)
        try:
            custom = await client.custom_status(args.instance_id)
        except UnverifiedDataError:
            _print_rows(rows)  # what the store's columns say, then why the state was not read
            raise
        if custom is not None:
            rows.append(("custom", repr(custom)))
        _print_rows(rows)
        return 0
    return await _with_client(args, act)


async def _show(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        info = await client.status(args.instance_id)
        summary = await client.summary(args.instance_id)
        if args.json:
            print(json.dumps({**_as_dict(info), "summary": summary}))
            return 0
        rows = _info_rows(info)
        if summary is None:
            _print_rows(rows)
            print("\nno stack yet: it has not paused since it started")
            return 0
        _print_rows(rows + showing.about_lines(summary))
        stack = showing.stack_lines(summary)
        if stack:
            print("\n" + ("last paused at, before it ran on:\n" if info.status == "running"
                          else "") + "\n".join(stack))
        for line in showing.outcome_lines(summary):
            print(line)
        return 0
    return await _with_client(args, act)


async def _history(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        after = 0
        while True:  # with --follow, looks at the status first: its last entries are then read
            ended = args.follow and (await client.status(args.instance_id)).status in ENDED
            for entry in await client.history(args.instance_id, after):
                after = entry.number
                print(json.dumps(dataclasses.asdict(entry)) if args.json
                      else showing.entry_line(entry, _time))
            if not args.follow or ended:
                return 0
            await client.store.wait_for_change(1.0)
    return await _with_client(args, act)


def _info_rows(info: InstanceInfo) -> list[tuple[str, str]]:
    """What the store's columns say of an instance, as ``status`` and ``show`` print it."""
    rows = [("instance", info.instance_id), ("program", info.program),
            ("status", _status_text(info)), ("created", _time(info.created_at)),
            ("updated", _time(info.updated_at))]
    if info.reason is not None:
        rows.append(("reason", info.reason))
    if info.blocked_by is not None:
        rows.append(("seen by", info.blocked_by))
    if info.lease_owner is not None:
        rows.append(("worker", info.lease_owner))
    return rows


def _print_rows(rows: list[tuple[str, str]]) -> None:
    for label, value in rows:
        print(f"{label:<9} {value}")


async def _publish(args: argparse.Namespace) -> int:
    payload = _json(args.payload, "payload") if args.payload is not None else None

    async def act(client: Client) -> int:
        await client.publish_event(args.instance_id, args.event, payload)
        print(f"published {args.event!r} to {args.instance_id}")
        return 0
    return await _with_client(args, act)


async def _list(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        infos = await client.list(args.status, args.limit)
        if args.json:
            for info in infos:
                print(json.dumps(_as_dict(info)))
            return 0
        rows = [("ID", "STATUS", "PROGRAM", "UPDATED")]
        rows += [(i.instance_id, _status_text(i), i.program, _time(i.updated_at)) for i in infos]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                  + "  " + row[3])
        return 0
    return await _with_client(args, act)


async def _result(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        try:
            value = await client.result(args.instance_id, wait=args.wait, timeout=args.timeout)
        except InstanceNotEnded as error:
            return _error(f"{error} (use --wait to wait for it)", FAILED)
        except (UnknownInstanceError, StoreError, TimeoutError, IncompatibleStateError):
            raise  # not the instance's outcome: its state could not be read
        except (InstanceTerminated, Cancelled) as error:  # their message says what happened
            return _error(str(error), FAILED)
        except Exception as error:  # the instance's own error
            return _error(f"instance {args.instance_id!r} failed: {type(error).__name__}: {error}",
                          FAILED)
        try:
            print(json.dumps(value))
        except (TypeError, ValueError):
            print(repr(value))
        return 0
    return await _with_client(args, act)


# What each command that changes an instance prints: when it did, when there was nothing to do.
_CHANGES = {
    "terminate": ("terminated {}", "{} had already ended; nothing changed"),
    "cancel": ("cancellation sent to {}", "{} had already ended; nothing changed"),
    "suspend": ("suspended {}", "{} was not running or waiting; nothing changed"),
    "resume": ("resumed {}", "{} was not suspended; nothing changed"),
    "retry": ("{} runs again from its last save", "{} has not failed; nothing changed"),
}


async def _check(args: argparse.Namespace) -> int:
    programs = _programs_of(args.modules)

    async def act(client: Client) -> int:
        checked = await client.check(programs)
        for instance in checked:
            if args.json:
                print(json.dumps(instance.as_dict()))
                continue
            for frame in instance.frames:
                print(f"{instance.instance_id}  {frame.function}()  {_frame_text(frame)}")
        if not args.json:
            stuck = sum(not instance.runs for instance in checked)
            print(f"{len(checked) - stuck} of {len(checked)} unfinished instance(s) can run on "
                  "this code" + (f"; {stuck} cannot" if stuck else ""))
        return 0 if all(instance.runs for instance in checked) else 1
    return await _with_client(args, act)


async def _resign(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        resigned = await client.store.resign(adopt_unsigned=args.adopt_unsigned)
        for problem in resigned.left:
            print(f"left: {problem}")
        print(f"signed {resigned.changed} blob(s) anew with the first key of "
              f"{client.store.keyring.source}" + (f"; left {len(resigned.left)} that do not "
                                                   "verify" if resigned.left else ""))
        return 0 if not resigned.left else FAILED
    return await _with_client(args, act)


def _frame_text(frame: FrameCheck) -> str:
    if frame.outcome == UNCHANGED:
        return f"line {frame.old_line}: unchanged"
    if frame.outcome == MOVES:
        return f"line {frame.old_line} -> line {frame.new_line}: moves"
    if frame.outcome == HOOK:
        return f"line {frame.old_line}: its migration hook decides ({frame.reason})"
    return f"line {frame.old_line}: stays: {frame.reason}"


async def _change(args: argparse.Namespace) -> int:
    async def act(client: Client) -> int:
        reason = (args.reason,) if args.action in ("terminate", "cancel") else ()
        changed = await getattr(client, args.action)(args.instance_id, *reason)
        done, unchanged = _CHANGES[args.action]
        print((done if changed else unchanged).format(args.instance_id))
        return 0
    return await _with_client(args, act)


# Helpers.
def _import(name: str) -> ModuleType:
    """Import a user's module. Whatever stops it (no such module, a syntax error, an exception
    its code raises) is a bad command line, told in one line naming the module."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules of the working directory
    try:
        return importlib.import_module(name)
    except Exception as error:
        raise UsageError(f"cannot import module {name!r}: {_describe(error)}") from None


def _describe(error: Exception) -> str:
    """An import's error, with the line that raised it (a SyntaxError's message has its own)."""
    text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, SyntaxError | ImportError) or not frames:
        return text
    return f"{text} ({frames[-1].filename}, line {frames[-1].lineno})"


def _programs_of(references: list[str]) -> list[DurableProgram]:
    """The programs worker or check arguments name, each once (``shop shop:order`` is fine)."""
    return list({id(program): program for reference in references
                 for program in _programs(reference)}.values())


def _programs(reference: str) -> list[DurableProgram]:
    """The programs a worker or check argument names: MODULE, all it defines; MODULE:NAME, one."""
    if ":" in reference:
        return [_program(reference)]
    programs = _defined(_import(reference))
    if not programs:
        raise UsageError(f"module {reference!r} defines no durable program (make_durable(fn))")
    return programs


def _defined(module: ModuleType) -> list[DurableProgram]:
    """The durable programs a module's variables hold, each once."""
    return list({id(value): value for value in vars(module).values()
                 if isinstance(value, DurableProgram)}.values())


def _program(reference: str) -> DurableProgram:
    """The program MODULE:NAME names: by its key, as `durable list` and workers show it
    (``shop:order`` for ``order_program = make_durable(order)``), or by the variable that
    holds it (``shop:order_program``), so both spellings a user sees work."""
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise UsageError(f"name a program as MODULE:NAME, got {reference!r}")
    module = _import(module_name)
    programs = _defined(module)
    by_key = [program for program in programs if program.key == reference]
    held = _attribute(module, name)
    if isinstance(held, DurableProgram):
        if by_key and by_key[0] is not held:
            raise UsageError(f"{reference} is ambiguous: it is the key of a durable program, and "
                             f"the variable {name!r} holds another one, {held.key}: name the "
                             "one you mean by the variable that holds it")
        return held
    if by_key:
        return by_key[0]
    known = ", ".join(sorted(program.key for program in programs)) or "none"
    raise UsageError(f"{reference} is not a durable program (make_durable(fn)); the programs of "
                     f"module {module_name!r}: {known}")


def _attribute(module: ModuleType, name: str) -> Any:
    """What ``module.a.b`` holds for the name ``a.b``; None if nothing."""
    value: Any = module
    for part in name.split("."):
        value = getattr(value, part, None)
    return value


def _json(text: str, what: str) -> Any:
    """A JSON value given on the command line, in a file (``@FILE``) or on standard input
    (``-``): a big payload does not fit in a command line. Errors name where it was read."""
    if text == "-":
        where, data = "on standard input", sys.stdin.buffer.read()
    elif text.startswith("@"):
        where, data = f"in the file {text[1:]!r}", _read(text[1:], what)
    else:
        where, data = f"given ({text[:60]!r}{'...' if len(text) > 60 else ''})", text.encode()
    try:
        return json.loads(data)
    except ValueError as error:  # JSONDecodeError, or bytes that are no Unicode text
        raise UsageError(f"the {what} {where} is not valid JSON: {error}") from None


def _read(path: str, what: str) -> bytes:
    """The bytes of the file ``@path`` names; a clear error naming it if they cannot be read."""
    if not path:
        raise UsageError(f"name the file of the {what} after @, as in @{what}.json")
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read the {what} from the file {path!r}: "
                         f"{error.strerror or error}") from None


def _status_text(info: InstanceInfo) -> str:
    text = f"{info.status} for {info.waiting_for}" if info.waiting_for else info.status
    return text if info.wake_at is None else f"{text} until {_time(info.wake_at)}"


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _as_dict(info: InstanceInfo) -> dict[str, Any]:
    return {"instance_id": info.instance_id, "program": info.program, "status": info.status,
            "waiting_for": info.waiting_for, "created_at": info.created_at,
            "updated_at": info.updated_at, "reason": info.reason, "worker": info.lease_owner,
            "blocked_by": info.blocked_by}
