"""One conformance suite for every StateStore, the EventLog part of ours, and DiskStateStore specifics."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from harness import SeedStyleStore

from durable import (
    DiskStateStore,
    DurableBackend,
    InMemoryStateStore,
    InstanceEndedError,
    InstanceExistsError,
    PauseForEventException,
    SqliteStateStore,
    StateStore,
    StoreError,
    TooLargeError,
    UnknownInstanceError,
    make_durable,
)
from durable.errors import StoreURLError
from durable.runtime.runtime import DurableRuntime
from durable.stores import EventLog, open_store
from durable.stores import disk as disk_module

ROOT = Path(__file__).resolve().parent.parent


def open_kind(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if kind == "memory":
        return InMemoryStateStore()
    if kind == "disk":
        return DiskStateStore(tmp_path / "store")
    if kind == "sqlite":
        return SqliteStateStore(tmp_path / "durable.db")
    if kind == "postgres":
        return open_store(request.getfixturevalue("postgres_dsn"))
    return SeedStyleStore()


async def opened_store(request: pytest.FixtureRequest, tmp_path: Path):
    opened = open_kind(request.param, request, tmp_path)
    yield opened
    if hasattr(opened, "close"):
        await opened.close()


store = pytest.fixture(opened_store, params=["memory", "disk", "sqlite", "postgres", "seed"],
                       name="store")
log = pytest.fixture(opened_store, params=["memory", "disk", "sqlite", "postgres"], name="log")


def state(n: int = 0, **extra: Any) -> dict[str, Any]:
    """A state shaped like the runtime's (status, frames, consumed_events, ...)."""
    return {"status": "running", "frames": [b"frame-%d" % n], "items": [n, {"k": [n]}],
            "consumed_events": [], **extra}


ODD_IDS = [
    "a/b", "..", ".", "../../escape", "a\\b", "x:y*?<>|\"", "ünïcödé-☃-日本", "🙂" * 40,
    "x" * 119, "x" * 120, "x" * 121, "y" * 1000, "%2F", "a%2Fb", " leading space",
    "trailing space ", "CON", "state.state", "x.events",
]
# The longest valid ids: 1,000 characters, 4,000 bytes of UTF-8 (varied, so that no index can
# compress them), and ids every store refuses, with what its error says.
LONGEST_IDS = ["a" * 1000, "".join(chr(0x20000 + (n * 7919) % 0xA000) for n in range(1000))]
BAD_IDS = [("", "must not be empty"), ("x" * 1001, "1001 characters"),
           ("tab\tid", re.escape("control character '\\t'")), ("nul\x00id", "control character"),
           ("line\nbreak", "control character"), ("c1\x85", "control character")]


# --- every store ------------------------------------------------------------------------------
async def test_load_of_unknown_instance_is_none(store) -> None:
    assert await store.load("never-saved") is None


async def test_save_then_load_roundtrip(store) -> None:
    original = state(1, result=b"\x00\xff", nested=({"a": (1, 2.5, None)}, frozenset({3})))
    await store.save("i", original)
    assert await store.load("i") == original


async def test_saved_state_does_not_alias_what_was_passed(store) -> None:
    original = state(1)
    await store.save("i", original)
    original["status"] = "changed"
    original["items"][1]["k"].append("changed")
    original["frames"].append(b"changed")
    assert await store.load("i") == state(1)


async def test_loads_do_not_alias_each_other(store) -> None:
    await store.save("i", state(1))
    first = await store.load("i")
    first["items"][1]["k"].append("changed")
    first["status"] = "changed"
    assert await store.load("i") == state(1)


async def test_overwrite_replaces_the_state(store) -> None:
    await store.save("i", state(1))
    await store.save("i", state(2, status="paused"))
    assert await store.load("i") == state(2, status="paused")


async def test_many_instances_are_independent(store) -> None:
    for n in range(50):
        await store.save(f"instance-{n}", state(n))
    await store.save("instance-7", state(700))
    for n in range(50):
        assert await store.load(f"instance-{n}") == state(700 if n == 7 else n)
    assert await store.load("instance-50") is None


async def test_instance_ids_with_odd_characters(store) -> None:
    for n, instance_id in enumerate(ODD_IDS):
        await store.save(instance_id, state(n))
    for n, instance_id in enumerate(ODD_IDS):
        assert await store.load(instance_id) == state(n), repr(instance_id)


async def test_odd_instance_ids_stay_inside_the_store_directory(tmp_path) -> None:
    root = tmp_path / "store"
    store = DiskStateStore(root)
    for n, instance_id in enumerate(ODD_IDS):
        await store.save(instance_id, state(n))
        store.append_event(instance_id, f"event-{n}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert not list(tmp_path.parent.glob("*escape*"))
    entries = list(root.iterdir())
    files = [p for p in entries if p.is_file()]
    directories = [p for p in entries if p.is_dir()]
    assert len(files) == len(directories) == len(ODD_IDS)  # a state and an events directory each
    assert all(len(list(d.iterdir())) == 1 and not any(e.is_dir() for e in d.iterdir())
               for d in directories)
    fresh = DiskStateStore(root)  # and found again by another store object
    for n, instance_id in enumerate(ODD_IDS):
        assert await fresh.load(instance_id) == state(n), repr(instance_id)
        assert [e for _, e in await fresh.events(instance_id)] == [f"event-{n}"], repr(instance_id)


async def test_file_names_of_ids_do_not_collide_with_literal_ids(tmp_path) -> None:
    """Whatever file name an id is stored under (quoted, hashed for long or dotted ids),
    an instance whose id is literally that name is a different instance."""
    root = tmp_path / "store"
    store = DiskStateStore(root)
    ids = ["z" * 500, "..", ".hidden", "a/b", "plain"]
    for n, instance_id in enumerate(ids):
        await store.save(instance_id, state(n))
    names = [p.name for p in root.iterdir()]
    assert len(names) == len(ids)
    for name in names:
        for literal in {name, name.rsplit(".", 1)[0]}:
            if literal not in ids:
                assert await store.load(literal) is None, literal
    for n, instance_id in enumerate(ids):
        assert await store.load(instance_id) == state(n)


async def test_the_longest_valid_ids_are_kept(store) -> None:
    for n, instance_id in enumerate(LONGEST_IDS):
        assert len(instance_id) == 1000 and len(instance_id.encode()) == 1000 * (1 + 3 * n)
        await store.save(instance_id, state(n))
        await store.save(instance_id, state(n + 10))  # saved again: found by its key
    for n, instance_id in enumerate(LONGEST_IDS):
        assert await store.load(instance_id) == state(n + 10)


@pytest.mark.parametrize(("instance_id", "rule"), BAD_IDS)
async def test_invalid_ids_are_refused_naming_the_id_and_the_rule(log, instance_id, rule) -> None:
    """Our stores (a user's own store gets only ids the runtime checked)."""
    with pytest.raises(ValueError, match=rule) as raised:
        await log.save(instance_id, state(1))
    assert repr(instance_id)[:40] in str(raised.value)
    assert len(str(raised.value)) < 300  # a long id is shown truncated
    assert await log.load(instance_id) is None


# --- creating an instance (what Client.start and start_child do) -------------------------------
def started(arguments: bytes, program: str = "m:main") -> dict[str, Any]:
    """The state a start saves: its first frame holds the arguments."""
    return state(0, program=program, frames=[arguments])


async def test_create_makes_an_instance_once_and_compares_later_starts(log) -> None:
    assert await log.create("i", started(b"args"))
    assert not await log.create("i", started(b"args"))  # the same start: its handle
    with pytest.raises(InstanceExistsError, match="'i' exists already and it runs m:main, not "
                                                  "m:other") as raised:
        await log.create("i", started(b"args", program="m:other"))
    assert raised.value.differs == "program"
    with pytest.raises(InstanceExistsError, match="other arguments") as raised:
        await log.create("i", started(b"other args"))
    assert raised.value.differs == "arguments"
    await log.save("i", state(5, program="m:main"))  # runs on: later saves keep the digest
    assert not await log.create("i", started(b"args"))
    with pytest.raises(InstanceExistsError, match="other arguments"):
        await log.create("i", started(b"other args"))
    assert await log.load("i") == state(5, program="m:main")
    for instance_id, rule in BAD_IDS:
        with pytest.raises(ValueError, match=rule):
            await log.create(instance_id, started(b"args"))


async def test_concurrent_creates_on_disk_create_once(tmp_path) -> None:
    """Two store objects (as two processes have), each in a thread of its own."""
    stores = [DiskStateStore(tmp_path), DiskStateStore(tmp_path)]

    def create(k: int, barrier: threading.Barrier, instance_id: str, arguments: bytes) -> Any:
        barrier.wait()
        try:
            return asyncio.run(stores[k].create(instance_id, started(arguments)))
        except InstanceExistsError as error:
            return error
    for n in range(20):
        barrier = threading.Barrier(2)
        arguments = [b"same", b"same" if n % 2 else b"other"]
        outcomes = await asyncio.gather(*(asyncio.to_thread(create, k, barrier, f"i{n}",
                                                            arguments[k]) for k in range(2)))
        assert outcomes.count(True) == 1, outcomes
        [other] = [o for o in outcomes if o is not True]
        assert other is False if n % 2 else isinstance(other, InstanceExistsError), outcomes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file


# --- size limits -------------------------------------------------------------------------------
LIMITS = "max_state_bytes=10000&max_payload_bytes=1000"


@pytest.fixture(params=["memory", "disk", "sqlite", "postgres"])
async def small(request, tmp_path):
    """A store of each kind with small limits: 10,000 bytes of state, 1,000 of payload, set
    in its constructor (memory, disk) or its URL (SQLite; PostgreSQL, beside a libpq option)."""
    limits = {"max_state_bytes": 10_000, "max_payload_bytes": 1_000}
    if request.param == "memory":
        opened = InMemoryStateStore(**limits)
    elif request.param == "disk":
        opened = DiskStateStore(tmp_path / "store", **limits)
    elif request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path / 'durable.db'}?{LIMITS}")
    else:
        opened = open_store(f"{request.getfixturevalue('postgres_dsn')}?connect_timeout=7&{LIMITS}")
        assert opened.dsn.endswith("?connect_timeout=7")  # libpq's own option kept
    assert (opened.max_state_bytes, opened.max_payload_bytes) == (10_000, 1_000)
    yield opened
    if hasattr(opened, "close"):
        await opened.close()


async def test_a_state_over_the_limit_is_refused_and_the_previous_state_stays(small) -> None:
    await small.save("big", state(1, items=[b"x" * 9_000]))
    with pytest.raises(TooLargeError, match=r"state of instance 'big' is 2\d,\d{3} bytes, over "
                                            r"the store's limit of 10,000 bytes \(max_state_bytes\)"):
        await small.save("big", state(2, items=[b"x" * 20_000]))
    assert await small.load("big") == state(1, items=[b"x" * 9_000])
    with pytest.raises(TooLargeError, match="'new'"):
        await small.save("new", state(2, items=[b"x" * 20_000]))
    assert await small.load("new") is None


async def test_a_payload_over_the_limit_is_refused(small) -> None:
    await small.save("i", state(1))
    kept = small.append_event("i", "go", b"p" * 1_000)
    with pytest.raises(TooLargeError, match=r"payload of instance 'i' is 1,001 bytes, over the "
                                            r"store's limit of 1,000 bytes \(max_payload_bytes\)"):
        small.append_event("i", "go", b"p" * 1_001)
    assert await small.events("i") == [(kept, "go")]


@pytest.mark.parametrize("kind", ["memory", "disk", "sqlite"])
def test_limits_must_be_positive(kind, tmp_path) -> None:
    make = {"memory": lambda **k: InMemoryStateStore(**k),
            "disk": lambda **k: DiskStateStore(tmp_path, **k),
            "sqlite": lambda **k: SqliteStateStore(tmp_path / "d.db", **k)}[kind]
    with pytest.raises(ValueError, match="max_state_bytes must be a positive number"):
        make(max_state_bytes=0)
    with pytest.raises(ValueError, match="max_payload_bytes must be a positive number"):
        make(max_payload_bytes=-1)


@pytest.mark.parametrize("url", ["memory://", "file:///{}/store", "sqlite:///{}/durable.db"])
def test_limits_in_a_store_url(url, tmp_path) -> None:
    url = url.format(tmp_path)
    opened = open_store(f"{url}?max_payload_bytes=5&max_state_bytes=7")
    assert (opened.max_state_bytes, opened.max_payload_bytes) == (7, 5)
    with pytest.raises(StoreURLError, match=r"max_state_bytes in store URL '.*' must be a "
                                            r"positive whole number of bytes, not '1e6'"):
        open_store(f"{url}?max_state_bytes=1e6")
    with pytest.raises(StoreURLError, match=r"max_payload_bytes .* not '0'"):
        open_store(f"{url}?max_payload_bytes=0")
    with pytest.raises(StoreURLError, match=r"unknown option 'timeout' in store URL '.*': this "
                                            r"store takes max_state_bytes and max_payload_bytes"):
        open_store(f"{url}?timeout=3")


# --- stores that are event logs ---------------------------------------------------------------
@pytest.fixture
async def log_of_i(log):
    """An event log with instances "i" and "j" saved: events go only to instances that exist."""
    await log.save("i", state(0))
    await log.save("j", state(0))
    return log


async def test_events_to_an_unknown_instance_are_refused(log) -> None:
    with pytest.raises(UnknownInstanceError, match="'nobody'"):
        log.append_event("nobody", "go")
    assert await log.events("nobody") == []
    with pytest.raises(UnknownInstanceError, match="'nobody'"):
        DurableBackend(log).publish_event("nobody", "go")


@pytest.mark.parametrize("status", ["completed", "failed", "terminated"])
async def test_events_to_an_ended_instance_are_refused(log, status) -> None:
    await log.save("i", state(1, status="paused", waiting_for="go"))
    log.append_event("i", "go")
    await log.save("i", state(2, status=status))
    shown = {"completed": "finished"}.get(status, status)
    with pytest.raises(InstanceEndedError, match=f"instance 'i' has ended \\({shown}\\)"):
        log.append_event("i", "go")
    with pytest.raises(InstanceEndedError):
        DurableBackend(log).publish_event("i", "go", {"late": True})
    assert [name for _, name in await log.events("i")] == ["go"]  # only the one before


async def test_events_to_invalid_ids_are_refused(log) -> None:
    for instance_id, rule in BAD_IDS:
        with pytest.raises(ValueError, match=rule):
            log.append_event(instance_id, "go")


async def test_events_of_the_longest_ids(log) -> None:
    for instance_id in LONGEST_IDS:
        await log.save(instance_id, state(1))
        event_id = log.append_event(instance_id, "go", b"payload")
        assert await log.events(instance_id) == [(event_id, "go")]
        assert await log.payload(instance_id, event_id) == b"payload"
        await log.save(instance_id, state(2, consumed_events=[event_id]))
        assert await log.events(instance_id) == []


async def test_events_come_back_in_publish_order(log_of_i) -> None:
    log = log_of_i
    names = [f"e{n % 7}" for n in range(40)]
    ids = [log.append_event("i", name) for name in names]
    assert len(set(ids)) == len(ids)
    assert await log.events("i") == list(zip(ids, names, strict=True))
    assert await log.events("other") == []


async def test_event_names_come_back_unchanged(log_of_i) -> None:
    log = log_of_i
    names = ["", "ünï ☃ 日本", "with space", "a/b", "line\nbreak", "cr\rlf\r\n", "tab\t", "x" * 3000]
    for name in names:
        log.append_event("i", name)
    assert [name for _, name in await log.events("i")] == names


async def test_consumed_events_disappear_when_the_state_is_saved(log_of_i) -> None:
    log = log_of_i
    ids = [log.append_event("i", f"e{n}") for n in range(5)]
    other = log.append_event("j", "e1")
    await log.save("i", state(1, consumed_events=[ids[1], ids[3]]))
    assert await log.events("i") == [(ids[0], "e0"), (ids[2], "e2"), (ids[4], "e4")]
    assert await log.events("j") == [(other, "e1")]
    # Consumed for good: a later save that lists nothing does not bring them back.
    await log.save("i", state(2))
    assert [name for _, name in await log.events("i")] == ["e0", "e2", "e4"]
    assert await log.load("i") == state(2)


async def test_events_published_after_a_save_are_kept(log_of_i) -> None:
    log = log_of_i
    first = log.append_event("i", "go")
    await log.save("i", state(1, consumed_events=[first]))
    second = log.append_event("i", "go")
    assert await log.events("i") == [(second, "go")]
    await log.save("i", state(2))
    assert await log.events("i") == [(second, "go")]


async def test_payloads_come_back_with_their_event(log_of_i) -> None:
    log = log_of_i
    plain = log.append_event("i", "go")
    blob = bytes(range(256)) * 40
    carrying = log.append_event("i", "go", blob)
    empty = log.append_event("i", "go", b"")
    assert await log.payload("i", plain) is None
    assert await log.payload("i", carrying) == blob
    assert await log.payload("i", empty) == b""


# --- DiskStateStore -----------------------------------------------------------------------------
def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def events_dir(directory: Path) -> Path:
    """The one directory of event files in a store holding one instance."""
    (found,) = [p for p in directory.iterdir() if p.is_dir()]
    return found


def everything(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


async def test_disk_store_keeps_state_across_store_objects(tmp_path) -> None:
    await DiskStateStore(tmp_path).save("i", state(1))
    assert await DiskStateStore(tmp_path).load("i") == state(1)


async def test_disk_save_failing_before_the_rename_keeps_the_old_state(tmp_path, monkeypatch) -> None:
    store = DiskStateStore(tmp_path)
    await store.save("i", state(1))
    before = everything(tmp_path)

    def broken_replace(source, destination):
        raise OSError("disk gone")

    monkeypatch.setattr(disk_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        await store.save("i", state(2))
    monkeypatch.undo()
    assert await store.load("i") == state(1)
    assert everything(tmp_path) == before  # no temporary file left behind


async def test_disk_save_failing_midway_through_the_write_keeps_the_old_state(tmp_path, monkeypatch) -> None:
    store = DiskStateStore(tmp_path)
    await store.save("i", state(1))

    def broken_fsync(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(disk_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="fsync failed"):
        await store.save("i", state(2))
    monkeypatch.undo()
    assert await store.load("i") == state(1)
    assert len(visible(tmp_path)) == 1 and visible(tmp_path)[0].endswith(".state")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_process_dying_mid_save_leaves_the_old_state(tmp_path) -> None:
    """A real process dies between writing the temporary file and renaming it."""
    store = DiskStateStore(tmp_path)
    await store.save("i", state(1))
    event_id = store.append_event("i", "go")
    proc = run_python("""
        import asyncio, os, sys
        from durable.stores import disk
        disk.os.replace = lambda *a: os._exit(42)
        store = disk.DiskStateStore(sys.argv[1])
        asyncio.run(store.save("i", {"status": "half-written", "consumed_events": [sys.argv[2]]}))
    """, str(tmp_path), event_id)
    assert proc.returncode == 42, proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")  # the interrupted write
    fresh = DiskStateStore(tmp_path)
    assert await fresh.load("i") == state(1)
    assert await fresh.events("i") == [(event_id, "go")]  # not consumed: that save never happened
    assert len(visible(tmp_path)) == 2  # the state and the events of "i", no temporary file
    await fresh.save("i", state(2))
    assert await DiskStateStore(tmp_path).load("i") == state(2)


async def test_process_dying_mid_publish_leaves_no_event(tmp_path) -> None:
    proc = run_python("""
        import asyncio, os, sys
        from durable.stores import disk
        store = disk.DiskStateStore(sys.argv[1])
        asyncio.run(store.save("i", {"status": "running"}))
        store.append_event("i", "first")
        disk.os.replace = lambda *a: os._exit(42)
        store.append_event("i", "second")
    """, str(tmp_path))
    assert proc.returncode == 42, proc.stderr
    assert [name for _, name in await DiskStateStore(tmp_path).events("i")] == ["first"]


async def test_failed_publish_raises_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    store = DiskStateStore(tmp_path)
    await store.save("i", state(1))
    store.append_event("i", "first")

    def broken_replace(source, destination):
        raise OSError("disk gone")

    monkeypatch.setattr(disk_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.append_event("i", "second")
    monkeypatch.undo()
    assert [name for _, name in await store.events("i")] == ["first"]
    assert len(list(events_dir(tmp_path).iterdir())) == 1


async def test_deletion_of_consumed_events_interrupted_by_a_crash_is_finished(tmp_path) -> None:
    """A real process dies after the state naming consumed events is saved, at the first
    file deletion (of those events)."""
    store = DiskStateStore(tmp_path)
    await store.save("i", state(1))
    consumed_id = store.append_event("i", "go")
    kept_id = store.append_event("i", "go")
    proc = run_python("""
        import asyncio, os, sys
        from durable import DiskStateStore
        os.unlink = os.remove = lambda *a, **k: os._exit(42)
        state = {"status": "running", "consumed_events": [sys.argv[2]]}
        asyncio.run(DiskStateStore(sys.argv[1]).save("i", state))
    """, str(tmp_path), consumed_id)
    assert proc.returncode == 42, proc.stderr
    assert sorted(p.name for p in events_dir(tmp_path).iterdir()) == [consumed_id, kept_id]
    fresh = DiskStateStore(tmp_path)
    assert await fresh.events("i") == [(kept_id, "go")]  # consumed, though still on disk
    assert await fresh.load("i") == {"status": "running", "consumed_events": [consumed_id]}
    assert sorted(p.name for p in events_dir(tmp_path).iterdir()) == [kept_id]  # load finished it
    await fresh.save("i", state(2))
    assert await fresh.events("i") == [(kept_id, "go")]


async def test_disk_events_keep_publish_order_when_the_clock_does_not_advance(tmp_path, monkeypatch) -> None:
    """Coarse clocks (or a clock stepped back) must not reorder events of one publisher."""
    store = DiskStateStore(tmp_path)
    await store.save("i", state(1))
    monkeypatch.setattr(disk_module.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    names = [f"e{n}" for n in range(12)]
    for name in names:
        store.append_event("i", name)
    monkeypatch.undo()
    assert [name for _, name in await store.events("i")] == names


async def test_disk_event_names_do_not_depend_on_the_locale(tmp_path) -> None:
    """Published and read back by processes whose locale encoding is ASCII."""
    code = """
        import asyncio, locale, sys
        from durable import DiskStateStore
        assert locale.getpreferredencoding(False).lower() not in ("utf-8", "utf8")
        store = DiskStateStore(sys.argv[1])
        if sys.argv[2] == "publish":
            asyncio.run(store.save("i", {"status": "running"}))
            store.append_event("i", "genehmigt-\\u00fc-\\u2603")
        else:
            print(ascii([name for _, name in asyncio.run(store.events("i"))]))
    """
    env = dict(os.environ, PYTHONCOERCECLOCALE="0", LC_ALL="C", PYTHONUTF8="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for action in ("publish", "read"):
        proc = subprocess.run([sys.executable, "-X", "utf8=0", "-c", textwrap.dedent(code),
                               str(tmp_path), action], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ascii(["genehmigt-\u00fc-\u2603"])
    assert [name for _, name in await DiskStateStore(tmp_path).events("i")] == ["genehmigt-\u00fc-\u2603"]


# --- DiskStateStore across processes ------------------------------------------------------------
SIDE_EFFECTS: list[str] = []


async def approval_flow(order: str) -> str:
    SIDE_EFFECTS.append(f"before {order}")
    raise PauseForEventException("approved")
    SIDE_EFFECTS.append(f"after {order}")
    return f"{order} shipped"


approval = make_durable(approval_flow)

PUBLISH = """
    import sys
    from durable import DurableBackend, open_store
    DurableBackend(open_store(sys.argv[1])).publish_event(sys.argv[2], sys.argv[3])
"""


@pytest.fixture(params=["disk", "sqlite", "postgres"])
def url(request, tmp_path) -> str:
    """A store URL that another process can open too."""
    if request.param == "disk":
        return (tmp_path / "store").as_uri()
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'durable.db'}"
    return request.getfixturevalue("postgres_dsn")


@pytest.mark.parametrize("resume_with", ["same backend", "new backend"])
async def test_publish_from_another_process_reaches_the_instance(url, resume_with) -> None:
    SIDE_EFFECTS.clear()
    backend = DurableBackend(open_store(url))
    with pytest.raises(PauseForEventException) as paused:
        await approval("o-1", orchestration_backend=backend, instance_id="order/1")
    assert paused.value.event == "approved"
    proc = run_python(PUBLISH, url, "order/1", "approved")
    assert proc.returncode == 0, proc.stderr
    if resume_with == "new backend":
        backend = DurableBackend(open_store(url))
    result = await approval("ignored", orchestration_backend=backend, instance_id="order/1")
    assert result == "o-1 shipped"
    assert SIDE_EFFECTS == ["before o-1", "after o-1"]
    assert await open_store(url).events("order/1") == []  # consumed


async def created(backend: DurableBackend, instance_id: str, *args: Any) -> None:
    """Save the state a fresh start saves, without running anything (as ``Client.start``
    does): the instance exists, and waits for nothing yet."""
    runtime = DurableRuntime(approval, backend, instance_id)
    await backend.save_state(instance_id, runtime.initial_state(*args))


async def test_event_published_by_another_process_before_the_instance_waits_is_kept(url) -> None:
    SIDE_EFFECTS.clear()
    backend = DurableBackend(open_store(url))
    await created(backend, "order-2", "o-2")
    proc = run_python(PUBLISH, url, "order-2", "approved")
    assert proc.returncode == 0, proc.stderr
    assert await approval("o-2", orchestration_backend=backend, instance_id="order-2") == "o-2 shipped"
    assert SIDE_EFFECTS == ["before o-2", "after o-2"]
    assert await backend.state_store.events("order-2") == []


async def test_event_published_before_the_instance_waits_is_kept(log) -> None:
    SIDE_EFFECTS.clear()
    backend = DurableBackend(log)
    await created(backend, "order-3", "o-3")
    backend.publish_event("order-3", "approved")
    backend.publish_event("order-3", "unrelated")
    assert await approval("o-3", orchestration_backend=backend, instance_id="order-3") == "o-3 shipped"
    assert SIDE_EFFECTS == ["before o-3", "after o-3"]
    assert [name for _, name in await log.events("order-3")] == ["unrelated"]


def test_stores_are_what_they_claim() -> None:
    assert isinstance(InMemoryStateStore(), EventLog)
    assert not isinstance(SeedStyleStore(), EventLog)


@pytest.mark.parametrize("scheme, kind", [("sqlite", "file"), ("file", "directory")])
async def test_opening_without_create_never_makes_a_store(tmp_path, scheme, kind) -> None:
    path = tmp_path / "typo" / "durable.db"
    url = f"{scheme}:///{path}" if scheme == "sqlite" else f"file://{path}"
    with pytest.raises(StoreError) as caught:
        open_store(url, create=False)
    assert str(caught.value) == (f"no store at {url}: the {kind} {path} does not exist (a "
                                 "command that only reads never creates a store)")
    assert not (tmp_path / "typo").exists()
    made = open_store(url)  # the default still creates it
    await made.save("one", state(1))
    opened = open_store(url, create=False)  # and then it is there
    assert await opened.load("one") == state(1)
    for store in (made, opened):
        if hasattr(store, "close"):
            await store.close()
