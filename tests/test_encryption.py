"""Encryption at rest: with an encryption key, what a store keeps is unreadable in its files."""

from __future__ import annotations

from pathlib import Path

import pytest

from durable import (
    DiskStateStore,
    DurableBackend,
    PauseForEventException,
    SqliteStateStore,
    make_durable,
    wait_for_event,
)
from durable.errors import StoreError, UnverifiedDataError
from durable.stores.encryption import AesGcmCodec

CARD = "4111 1111 1111 1111 (a card number)"


async def _checkout(card: str) -> str:
    holder = f"card {card}"
    confirmation = await wait_for_event("confirm")
    return f"{holder} confirmed by {confirmation['by']}"


checkout = make_durable(_checkout)


def open_kind(kind: str, directory: Path) -> SqliteStateStore | DiskStateStore:
    return (SqliteStateStore(directory / "app.db") if kind == "sqlite"
            else DiskStateStore(directory / "states"))


def everything_written(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


@pytest.mark.parametrize("kind", ["sqlite", "disk"])
@pytest.mark.parametrize("encrypted", [False, True])
async def test_a_local_and_a_payload_are_unreadable_in_the_files(kind, encrypted, tmp_path,
                                                                 monkeypatch) -> None:
    if encrypted:
        monkeypatch.setenv("DURABLE_ENCRYPTION_KEY", AesGcmCodec.new_key())
    store = open_kind(kind, tmp_path)
    backend = DurableBackend(store)
    with pytest.raises(PauseForEventException):
        await checkout(CARD, orchestration_backend=backend, instance_id="c")
    backend.publish_event("c", "confirm", {"by": f"the holder of {CARD}"})
    # The card is in the state (a local, the arguments) and in the payload; in plain pickles
    # it can be read in the files, encrypted it cannot.
    assert (CARD.encode() in everything_written(tmp_path)) is not encrypted
    if kind == "sqlite":  # its summary (what people see of the variables) is encrypted too
        [frame] = (await store.summary("c"))["branches"][0]["frames"]
        assert frame["variables"]["holder"] == repr(f"card {CARD}")
    assert await checkout(orchestration_backend=backend, instance_id="c") == \
        f"card {CARD} confirmed by the holder of {CARD}"
    if hasattr(store, "close"):
        await store.close()


async def test_encryption_keys_rotate(tmp_path) -> None:
    old, new = AesGcmCodec.new_key(), AesGcmCodec.new_key()
    store = SqliteStateStore(tmp_path / "app.db", codec=AesGcmCodec([old]))
    await store.save("i", {"status": "running", "card": CARD})
    store.use_keys(None, AesGcmCodec([new, old]))  # the new key encrypts, both decrypt
    assert (await store.load("i"))["card"] == CARD
    assert (await store.resign()).changed == 1
    store.use_keys(None, AesGcmCodec([new]))
    assert (await store.load("i"))["card"] == CARD
    store.use_keys(None, AesGcmCodec([AesGcmCodec.new_key()]))
    with pytest.raises(UnverifiedDataError, match="cannot be decoded"):
        await store.load("i")
    store.use_keys(None, None)  # no codec at all
    with pytest.raises(UnverifiedDataError, match=r"is encoded \(encrypted\), and this store "
                                                  r"has no codec"):
        await store.load("i")
    await store.close()


def test_an_encryption_key_is_32_bytes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DURABLE_ENCRYPTION_KEY", "not base64 of 32 bytes")
    with pytest.raises(StoreError, match="key 1 of DURABLE_ENCRYPTION_KEY is not 32 bytes"):
        SqliteStateStore(tmp_path / "app.db")
