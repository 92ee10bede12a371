"""How a store turns states and event payloads into the bytes it keeps, and back."""

from __future__ import annotations

import base64
import functools
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass

from .. import history
from ..errors import IncompatibleStateError, StoreError, TooLargeError
from .base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_STATE_BYTES,
    HistoryEntry,
    State,
    StateStore,
)
from .sealing import (
    Codec,
    Keyring,
    SecretKeys,
    keyring,
    payload_bound,
    payload_named,
    shown_bound,
    state_bound,
    state_named,
)

SEALED_TEXT = "sealed:"  # text kept encrypted: then base64 of it sealed
Stored = tuple[int, float, str, str]  # a history entry in a store: number, at, kind, data
_as_json = json.JSONEncoder(default=str, separators=(",", ":")).encode


class Blobs:
    """How a store turns a state or an event payload into the bytes it keeps, and back:
    pickled (payloads arrive pickled), refused over the size limits before anything is written
    (so a state over the limit leaves the previous one in place), and sealed (``sealing``): a
    blob is unpickled only once its signature verifies. ``max_state_bytes`` of a pickled
    state, ``max_payload_bytes`` of an event's pickled payload."""

    max_state_bytes = DEFAULT_MAX_STATE_BYTES
    max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
    keyring: Keyring

    def _set_blobs(self, max_state_bytes: int, max_payload_bytes: int, keys: Keyring) -> None:
        for name, value in (("max_state_bytes", max_state_bytes),
                            ("max_payload_bytes", max_payload_bytes)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
        self.max_state_bytes = max_state_bytes
        self.max_payload_bytes = max_payload_bytes
        self.keyring = keys

    def use_keys(self, secret_key: SecretKeys | None, codec: Codec | None = None) -> None:
        """Sign with the first of ``secret_key`` (and verify with any; without, the keys it
        has), encoding with ``codec``."""
        if secret_key is None:
            self.keyring = Keyring(self.keyring.keys, self.keyring.source, codec)
        else:
            self.keyring = keyring(secret_key, codec=codec)

    def _resealer(self, adopt_unsigned: bool, left: list[str]) -> Callable[[bytes, bytes, str],
                                                                           bytes | None]:
        """What ``resign`` applies to each blob (``Keyring.resealed``)."""
        if not self.keyring.signs:
            raise StoreError("this store has no secret key to sign with (insecure_unsigned)")
        return functools.partial(self.keyring.resealed, adopt_unsigned=adopt_unsigned,
                                 left=left)

    def _state_blob(self, instance_id: str, state: State) -> bytes:
        data = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
        if len(data) > self.max_state_bytes:
            raise TooLargeError(instance_id, "the state", len(data), self.max_state_bytes,
                                "max_state_bytes")
        return self.keyring.seal(data, state_bound(instance_id))

    def _state_of(self, instance_id: str, blob: bytes) -> State:
        data = self.keyring.open(blob, state_bound(instance_id), state_named(instance_id))
        try:
            return pickle.loads(data)
        except Exception as error:
            raise IncompatibleStateError(f"{state_named(instance_id)} cannot be read: "
                                         f"{type(error).__name__}: {error}") from error

    def _payload_blob(self, instance_id: str, event: str, payload: bytes | None) -> bytes | None:
        if payload is None:
            return None
        if len(payload) > self.max_payload_bytes:
            raise TooLargeError(instance_id, "an event payload", len(payload),
                                self.max_payload_bytes, "max_payload_bytes")
        return self.keyring.seal(payload, payload_bound(instance_id, event))

    def _seal_text(self, instance_id: str, text: str | None) -> str | None:
        """Text kept beside the state for people (a summary, a history entry's data): as it
        is, or with a codec (it shows variables' values, as private as the variables) sealed,
        in base64."""
        if text is None or self.keyring.codec is None:
            return text
        sealed = self.keyring.seal(text.encode(), shown_bound(instance_id))
        return SEALED_TEXT + base64.b64encode(sealed).decode()

    def _entries(self, instance_id: str, state: State) -> tuple[list[Stored], bool]:
        """The history entries a save carries, as a store keeps them: ``(number, at, kind,
        data as JSON text)`` (numbered by the runtime's count, ``recorded``; the text sealed
        with a codec; plain tuples, which the garbage collector does not track); and whether
        the save trims the history (once every ``TRIM_EVERY`` entries)."""
        entries = state.get("history")
        if not entries:
            return [], False
        recorded = state.get("recorded", 0)
        first = recorded - len(entries) + 1
        made = [(first + offset, at, kind,
                 self._seal_text(instance_id, _as_json(data) if data else "{}"))
                for offset, (at, kind, data) in enumerate(entries)]
        return made, (first - 1) // history.TRIM_EVERY != recorded // history.TRIM_EVERY

    def _open_entry(self, instance_id: str, stored: Stored) -> HistoryEntry:
        """An entry as a client sees it."""
        number, at, kind, text = stored
        return HistoryEntry(number, at, kind, json.loads(self._open_text(instance_id, text)))

    def _open_text(self, instance_id: str, text: str) -> str:
        if not text.startswith(SEALED_TEXT):
            return text
        sealed = base64.b64decode(text[len(SEALED_TEXT):])
        return bytes(self.keyring.open(sealed, shown_bound(instance_id),
                                       f"what is shown of instance {instance_id!r}")).decode()

    def _payload_of(self, instance_id: str, event: str, event_id: str,
                    blob: bytes | None) -> bytes | memoryview | None:
        """The pickled payload, verified (the runtime unpickles it): a view into ``blob``."""
        if blob is None:
            return None
        return self.keyring.open(blob, payload_bound(instance_id, event),
                                 payload_named(instance_id, event, event_id))


def with_keys(store: StateStore, secret_key: SecretKeys | None, codec: Codec | None) -> None:
    """What ``Client``, ``Worker`` and ``DurableBackend`` do with the keys they are given."""
    if secret_key is None and codec is None:
        return
    if not isinstance(store, Blobs):
        raise TypeError(f"{type(store).__name__} does not seal what it saves: secret_key and "
                        "codec are for durable's own stores")
    store.use_keys(secret_key, codec)


@dataclass(frozen=True)
class Resigned:
    """What ``resign`` did: how many blobs it sealed anew with the first key, and those it left
    as they were because they do not verify (each named, with why)."""

    changed: int
    left: list[str]
