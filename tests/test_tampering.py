"""A forged row or file in a store never runs code: every blob is verified before it is unpickled.

Each test writes a malicious pickle (its ``__reduce__`` touches a marker file) where the
library keeps a state, a custom status, a result or an event payload, on every store, then
goes down every path that reads it: the worker resuming the instance, the command line's
``status``, ``result``, ``list`` and ``terminate``, and the seed-style program call. The
marker is never created; the worker leaves the instance blocked with the documented error,
and nothing else in the store changes.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import pickle
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import durable_command, running

from durable import (
    Client,
    DiskStateStore,
    DurableBackend,
    InMemoryStateStore,
    PauseForEventException,
    SqliteStateStore,
    Worker,
    make_durable,
    set_status,
    wait_for_event,
)
from durable.errors import StoreError, UnverifiedDataError
from durable.stores import open_store
from durable.stores.sealing import Hmac, Keyring, load_plain_data, state_bound

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


class Exploit:
    """Unpickling it runs a shell command that touches ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {self.marker}",)


async def _approval(name: str) -> str:
    await set_status({"stage": "waiting", "name": name})
    raise PauseForEventException("go")
    return f"{name} approved"


approval = make_durable(_approval)


async def _payment(name: str) -> str:
    paid = await wait_for_event("paid")
    return f"{name} paid {paid}"


payment = make_durable(_payment)


def forgeries(marker: Path, instance_id: str) -> dict[str, bytes]:
    """What someone who can write the store puts where a state is: an exploit as the whole
    state, as the custom status or the result of a state that looks real, and an exploit
    signed with a key that is not the store's."""
    looks_real = {"format": 2, "status": "paused", "frames": [], "program": approval.key}
    return {
        "state": pickle.dumps(Exploit(marker)),
        "custom_status": pickle.dumps({**looks_real, "custom_status": Exploit(marker)}),
        "result": pickle.dumps({**looks_real, "status": "completed",
                                "result": pickle.dumps(Exploit(marker))}),
        "other_key": Keyring([b"a key that is not the store's"], "someone").seal(
            pickle.dumps(Exploit(marker)), state_bound(instance_id)),
    }


@contextlib.contextmanager
def database(url: str) -> Iterator[Any]:
    """A plain connection to the store's database, as an attacker would have."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            yield connection
        finally:
            connection.close()
        return
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def execute(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    if not url.startswith("sqlite"):
        statement = statement.replace("?", "%s")
    with database(url) as connection:
        cursor = connection.execute(statement, params)
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in (cursor.fetchall() if cursor.description else [])]


def kept(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the store holds that a blocked instance must leave as it was: every state, and
    every event."""
    return (execute(url, "SELECT id, status, state FROM durable_instances ORDER BY id"),
            execute(url, "SELECT id, instance_id, name, payload FROM durable_events ORDER BY id"))


async def blocked(client: Client, instance_id: str) -> str:
    info = await client.wait_for_status(instance_id, "blocked", timeout=TIMEOUT)
    assert info.status == "blocked", info
    return info.reason or ""


@pytest.mark.parametrize("forgery", ["state", "custom_status", "result", "other_key"])
async def test_a_forged_state_runs_on_no_path(store_url, tmp_path, forgery) -> None:
    marker = tmp_path / "ran"
    store = open_store(store_url)
    client = Client(store)
    try:
        for instance_id in ("forged", "honest"):
            await client.start(approval, instance_id, instance_id=instance_id)
        async with running(Worker(store, [approval], poll_interval=0.05)):
            for instance_id in ("forged", "honest"):
                await client.wait_for_status(instance_id, "waiting", timeout=TIMEOUT)
        execute(store_url, "UPDATE durable_instances SET state = ? WHERE id = ?",
                forgeries(marker, "forged")[forgery], "forged")
        await client.publish_event("forged", "go")
        before = kept(store_url)

        code, out, err = await durable_command(tmp_path, "status", "forged", "--store", store_url)
        assert code == 1 and "status    waiting" in out, (out, err)
        assert "the saved state of instance 'forged'" in err and "it was not loaded" in err
        # A result is read only from an ended instance: the forger says it finished.
        execute(store_url, "UPDATE durable_instances SET status = 'finished' WHERE id = 'forged'")
        code, out, err = await durable_command(tmp_path, "result", "forged", "--store", store_url)
        assert code == 1 and "it was not loaded" in err, err
        assert "failed" not in err  # its state was not read: the instance did not fail
        execute(store_url, "UPDATE durable_instances SET status = 'waiting' WHERE id = 'forged'")
        code, out, err = await durable_command(tmp_path, "list", "--store", store_url)
        assert code == 0 and "forged" in out, err
        code, out, err = await durable_command(tmp_path, "show", "forged", "--store", store_url)
        assert code == 0 and "_approval" in out, err  # its summary: no pickle read
        with pytest.raises(UnverifiedDataError, match="'forged'"):
            await approval(orchestration_backend=DurableBackend(store), instance_id="forged")

        async with running(Worker(store, [approval], poll_interval=0.05)):
            reason = await blocked(client, "forged")
            await client.publish_event("honest", "go")
            assert await client.result("honest", timeout=TIMEOUT) == "honest approved"
        expected = ("is not signed" if forgery != "other_key" else
                    "was altered, or written with another key: its signature does not verify")
        assert reason.startswith("the saved state of instance 'forged' ") and expected in reason
        after = kept(store_url)
        assert [row for row in after[0] if row[0] == "forged"] == \
            [row for row in before[0] if row[0] == "forged"]
        assert [row for row in after[1] if row[1] == "forged"] == \
            [row for row in before[1] if row[1] == "forged"]

        code, out, err = await durable_command(tmp_path, "terminate", "forged", "forged state",
                                       "--store", store_url)
        assert code == 0, err  # terminating is how to be rid of it, without reading it
        assert (await client.status("forged")).status == "terminated"
    finally:
        await store.close()
    assert not marker.exists()


async def test_a_forged_payload_runs_on_no_path(store_url, tmp_path) -> None:
    marker = tmp_path / "ran"
    store = open_store(store_url)
    client = Client(store)
    try:
        await client.start(payment, "p", instance_id="p")
        await client.publish_event("p", "paid", {"amount": 12})
        execute(store_url, "UPDATE durable_events SET payload = ? WHERE instance_id = ?",
                pickle.dumps(Exploit(marker)), "p")
        before = kept(store_url)
        async with running(Worker(store, [payment], poll_interval=0.05)):
            reason = await blocked(client, "p")
        assert reason.startswith("the payload of event 'paid' (id ") and "of instance 'p'" in reason
        assert "is not signed" in reason
        with pytest.raises(UnverifiedDataError, match="the payload of event 'paid'"):
            await payment(orchestration_backend=DurableBackend(store), instance_id="p")
        assert kept(store_url)[1] == before[1]  # the event is kept, as it was
    finally:
        await store.close()
    assert not marker.exists()


# --- the stores of the seed-style call: memory and disk ---------------------------------------
async def paused(store: Any) -> DurableBackend:
    backend = DurableBackend(store)
    with pytest.raises(PauseForEventException):
        await approval("ann", orchestration_backend=backend, instance_id="i")
    return backend


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_a_forged_state_is_refused_by_the_seed_call(kind, tmp_path) -> None:
    marker = tmp_path / "ran"
    for name, forged in forgeries(marker, "i").items():
        store = InMemoryStateStore() if kind == "memory" else DiskStateStore(tmp_path / name)
        backend = await paused(store)
        if kind == "memory":
            store._states["i"] = forged
        else:  # the header the store wrote (the instance waits), then the forged state
            path = tmp_path / name / "i-i.state"
            with open(path, "rb") as file:
                load_plain_data(file)
                header = path.read_bytes()[:file.tell()]
            path.write_bytes(header + forged)
        backend.publish_event("i", "go")
        with pytest.raises(UnverifiedDataError, match="the saved state of instance 'i'"):
            await approval(orchestration_backend=backend, instance_id="i")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["memory", "disk"])
async def test_a_forged_payload_is_refused_by_the_seed_call(kind, tmp_path) -> None:
    marker = tmp_path / "ran"
    exploit = pickle.dumps(Exploit(marker))
    # The payload replaced; on disk also the whole event file, with something not an event.
    for forged_file in ([False] if kind == "memory" else [False, True]):
        store = InMemoryStateStore() if kind == "memory" else DiskStateStore(
            tmp_path / f"store-{forged_file}")
        backend = DurableBackend(store)
        with pytest.raises(PauseForEventException):
            await payment("ann", orchestration_backend=backend, instance_id="i")
        backend.publish_event("i", "paid", 12)
        [(event_id, _)] = await store.events("i")
        if kind == "memory":
            store._log._payloads[event_id] = ("paid", exploit)
            refused = "the payload of event 'paid'"
        else:
            event_file = tmp_path / f"store-{forged_file}" / "i-i.events" / event_id
            event_file.write_bytes(exploit if forged_file else pickle.dumps(("paid", exploit)))
            refused = (f"the event file {event_id} of instance 'i' is not an event this store "
                       "wrote" if forged_file else "the payload of event 'paid'")
        with pytest.raises(UnverifiedDataError, match=refused):
            await payment(orchestration_backend=backend, instance_id="i")
    assert not marker.exists()


# --- keys ------------------------------------------------------------------------------------
def owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_embedded_stores_make_a_key_file_readable_by_its_owner_only(tmp_path,
                                                                          monkeypatch) -> None:
    monkeypatch.delenv("DURABLE_SECRET_KEY")
    path = tmp_path / "app.db"
    first = SqliteStateStore(path)
    await first.save("i", {"status": "running", "n": 1})
    second = SqliteStateStore(path)  # another process opening the store: the same key
    assert await second.load("i") == {"status": "running", "n": 1}
    for made in (path, path.with_name("app.db-wal"), path.with_name("app.db-shm"),
                 path.with_name("app.db.key")):
        assert owner_only(made), made
    for store in (first, second):
        await store.close()
    disk = DiskStateStore(tmp_path / "states")
    await disk.save("i", {"status": "running"})
    disk.append_event("i", "go", b"\x80\x04K\x01.")
    assert owner_only(tmp_path / "states.key")
    assert all(owner_only(p) for p in (tmp_path / "states").rglob("*") if p.is_file())
    assert stat.S_IMODE((tmp_path / "states").stat().st_mode) == 0o700
    # Someone else's key file: what it signed does not verify here.
    (tmp_path / "states.key").write_text("a different key (made elsewhere)\n")
    with pytest.raises(UnverifiedDataError, match="does not verify under the key of the key "
                                                  "file"):
        await DiskStateStore(tmp_path / "states").load("i")


async def test_keys_rotate(any_store) -> None:
    """State signed with the old key is read while both are configured, signed anew with the
    new one by resign, and then read with the new key alone."""
    old, new = "the old key (retired soon)", "the new key (signing from now)"
    store = any_store
    store.use_keys([old])
    await store.save("i", {"status": "running", "n": 1})
    store.append_event("i", "go", pickle.dumps({"paid": 12}))
    store.use_keys([new, old])  # the new one signs, both verify
    assert await store.load("i") == {"status": "running", "n": 1}
    await store.save("j", {"status": "running", "n": 2})
    resigned = await store.resign()
    assert (resigned.changed, resigned.left) == (2, [])  # i's state and its payload
    assert (await store.resign()).changed == 0  # nothing left to do
    store.use_keys([new])  # the old one dropped
    assert [await store.load(i) for i in "ij"] == [{"status": "running", "n": 1},
                                                   {"status": "running", "n": 2}]
    [(event_id, event)] = await store.events("i")
    assert event == "go"
    assert pickle.loads(await store.payload("i", event_id)) == {"paid": 12}
    store.use_keys(["a third key (never used here)"])
    resigned = await store.resign()
    assert resigned.changed == 0 and len(resigned.left) == 3
    assert "the saved state of instance 'i' was altered, or written with another key" in \
        resigned.left[0]


async def test_resign_adopts_unsigned_state_only_when_asked(postgres_dsn, tmp_path,
                                                             monkeypatch) -> None:
    key = os.environ["DURABLE_SECRET_KEY"]
    monkeypatch.delenv("DURABLE_SECRET_KEY")
    unsigned = open_store(f"{postgres_dsn}?insecure_unsigned=true")  # no key anywhere
    client = Client(unsigned)
    await client.start(approval, "ann", instance_id="a")
    await unsigned.close()
    monkeypatch.setenv("DURABLE_SECRET_KEY", key)
    signing = open_store(postgres_dsn)
    try:
        with pytest.raises(UnverifiedDataError, match="is not signed"):
            await signing.load("a")
        code, out, err = await durable_command(tmp_path, "resign", "--store", postgres_dsn)
        assert code == 1 and "left: the saved state of instance 'a' is not signed" in out, err
        code, out, err = await durable_command(tmp_path, "resign", "--adopt-unsigned",
                                       "--store", postgres_dsn)
        assert (code, out) == (0, "signed 1 blob(s) anew with the first key of "
                                  "DURABLE_SECRET_KEY\n"), err
        assert (await signing.load("a"))["program"] == approval.key
    finally:
        await signing.close()


def test_a_key_is_long_enough(tmp_path) -> None:
    with pytest.raises(StoreError, match="key 2 of secret_key is 5 characters long; a secret key "
                                         "needs at least 16"):
        SqliteStateStore(tmp_path / "a.db", secret_key=["a long enough key", "short"])


async def test_postgres_needs_a_key_or_says_it_is_insecure(postgres_dsn, monkeypatch) -> None:
    monkeypatch.delenv("DURABLE_SECRET_KEY")
    with pytest.raises(StoreError, match=r"needs a secret key to sign what it saves: set "
                                         r"DURABLE_SECRET_KEY .* insecure_unsigned=True"):
        open_store(postgres_dsn)
    store = open_store(f"{postgres_dsn}?insecure_unsigned=true")
    try:
        await store.save("i", {"status": "running"})
        [(blob,)] = execute(postgres_dsn, "SELECT state FROM durable_instances")
        assert blob.startswith(b"\x80")  # a plain pickle: nothing signs it
        assert await store.load("i") == {"status": "running"}
    finally:
        await store.close()


async def test_the_memory_store_signs_only_with_a_key_given(monkeypatch) -> None:
    """Nothing outside the process can write it: by default it spends nothing on signatures."""
    monkeypatch.delenv("DURABLE_SECRET_KEY")
    plain, signed = InMemoryStateStore(), InMemoryStateStore(secret_key="a key given to it here")
    for store in (plain, signed):
        await store.save("i", {"status": "running"})
    assert plain._states["i"].startswith(b"\x80") and signed._states["i"].startswith(b"DUR1")


@pytest.mark.parametrize("key", [b"k" * 16, b"k" * 64, b"k" * 65, bytes(range(200))])
def test_signatures_are_hmac_sha256(key) -> None:
    for parts in ((b"",), (b"head", b"bound", b"data"), (b"x" * 1000,)):
        assert Hmac(key).digest(*parts) == hmac.digest(key, b"".join(parts), "sha256")


async def test_a_disk_store_written_before_signing_is_adopted_when_asked(tmp_path) -> None:
    """Its state files were a header without the id, then a plain pickle."""
    store = DiskStateStore(tmp_path / "states")
    legacy = pickle.dumps({"status": "running", "n": 1})
    header = pickle.dumps(("durable state", "running", "x:y", None), pickle.HIGHEST_PROTOCOL)
    (tmp_path / "states" / "i-old.state").write_bytes(header + legacy)
    with pytest.raises(UnverifiedDataError, match="the saved state of instance 'old' is not "
                                                  "signed"):
        await store.load("old")
    assert (await store.resign()).left == ["the saved state of instance 'old' is not signed "
                                           "(resign --adopt-unsigned signs it)"]
    assert (await store.resign(adopt_unsigned=True)).changed == 1
    assert await store.load("old") == {"status": "running", "n": 1}
