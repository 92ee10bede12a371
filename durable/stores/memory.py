"""InMemoryStateStore: the embedded default, for tests, development and one-process use."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Collection

from .. import history
from ..ids import check_instance_id
from .base import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_STATE_BYTES,
    EventLog,
    HistoryEntry,
    State,
    StateStore,
    event_status,
    receivable,
    same_start,
    start_digest,
)
from .blobs import Blobs, Resigned, Stored
from .sealing import (
    Codec,
    SecretKeys,
    keyring,
    payload_bound,
    payload_named,
    state_bound,
    state_named,
)


class MemoryEventLog(EventLog):
    """Events kept in this process's memory. Alone (``DurableBackend`` over a store that keeps
    no events) it cannot see the instances, so it takes an event for any valid id."""

    def __init__(self) -> None:
        self._events: dict[str, list[tuple[str, str]]] = {}
        self._ids = itertools.count(1)
        self._payloads: dict[str, tuple[str, bytes]] = {}  # event id -> (event, payload)

    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        check_instance_id(instance_id)
        event_id = f"{next(self._ids):012d}"
        self._events.setdefault(instance_id, []).append((event_id, event))
        if payload is not None:
            self._payloads[event_id] = (event, payload)
        return event_id

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        return list(self._events.get(instance_id, ()))

    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        return self.published(event_id)[1]

    def published(self, event_id: str) -> tuple[str | None, bytes | None]:
        """``(event, payload)`` of an unconsumed event with a payload, else ``(None, None)``."""
        return self._payloads.get(event_id, (None, None))

    def reseal(self, resealed: Callable[[bytes, bytes, str], bytes | None]) -> int:
        """Seal each payload anew (``resign``); how many changed."""
        changed = 0
        for instance_id, events in self._events.items():
            for event_id, event in events:
                if event_id in self._payloads:
                    new = resealed(self._payloads[event_id][1], payload_bound(instance_id, event),
                                   payload_named(instance_id, event, event_id))
                    if new is not None:
                        self._payloads[event_id] = (event, new)
                        changed += 1
        return changed

    def discard(self, instance_id: str, event_ids: Collection[str]) -> None:
        if event_ids and instance_id in self._events:  # most saves consume nothing
            done = set(event_ids)
            self._events[instance_id] = [e for e in self._events[instance_id] if e[0] not in done]
            for event_id in done:
                self._payloads.pop(event_id, None)


class InMemoryStateStore(Blobs, StateStore, EventLog):
    """Keeps every state serialised, so saved state never aliases live objects. Signs only
    with a key given (``secret_key`` or ``$DURABLE_SECRET_KEY``): nothing outside this
    process can write its states, so by default it spends nothing on signatures."""

    def __init__(self, *, secret_key: SecretKeys | None = None, codec: Codec | None = None,
                 max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self._set_blobs(max_state_bytes, max_payload_bytes,
                        keyring(secret_key, codec=codec, in_process=True))
        self._states: dict[str, bytes] = {}
        self._statuses: dict[str, str] = {}  # as a client sees them: is it there, has it ended?
        self._digests: dict[str, str] = {}  # of the starts that created instances (create)
        self._programs: dict[str, str] = {}  # of the instances: a create compares them
        self._history: dict[str, collections.deque[Stored]] = {}
        self._log = MemoryEventLog()

    def __repr__(self) -> str:
        return "InMemoryStateStore()"

    async def load(self, instance_id: str) -> State | None:
        blob = self._states.get(instance_id)
        return None if blob is None else self._state_of(instance_id, blob)

    async def save(self, instance_id: str, state: State) -> None:
        if instance_id not in self._states:  # an id saved before was checked then
            check_instance_id(instance_id)
        self._states[instance_id] = self._state_blob(instance_id, state)
        if "history" in state:  # (most saves record nothing)
            kept = self._history.get(instance_id)
            if kept is None:
                kept = self._history[instance_id] = collections.deque(maxlen=history.KEEP)
            kept.extend(self._entries(instance_id, state)[0])
        self._statuses[instance_id] = event_status(state)
        self._programs[instance_id] = state.get("program", "") if isinstance(state, dict) else ""
        self._log.discard(instance_id, state.get("consumed_events", ()))

    async def create(self, instance_id: str, state: State) -> bool:
        """Save ``state`` unless the instance exists, as ``InstanceStore.create`` does (True if
        this call created it; an existing instance started otherwise raises
        ``InstanceExistsError``). Nothing awaits between the look and the save: atomic."""
        if instance_id in self._states:
            same_start(instance_id, self._programs[instance_id], self._digests.get(instance_id),
                       state)
            return False
        await self.save(instance_id, state)
        self._digests[instance_id] = start_digest(state)
        return True

    async def history(self, instance_id: str, after: int = 0,
                      limit: int = history.KEEP) -> list[HistoryEntry]:
        """As ``InstanceStore.history``."""
        kept = [e for e in self._history.get(instance_id, ()) if e[0] > after][:limit]
        return [self._open_entry(instance_id, stored) for stored in kept]

    async def resign(self, *, adopt_unsigned: bool = False) -> Resigned:
        """As ``SqlStore.resign``."""
        left: list[str] = []
        resealed = self._resealer(adopt_unsigned, left)
        changed = 0
        for instance_id, blob in list(self._states.items()):
            new = resealed(blob, state_bound(instance_id), state_named(instance_id))
            if new is not None:
                self._states[instance_id] = new
                changed += 1
        return Resigned(changed + self._log.reseal(resealed), left)

    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        check_instance_id(instance_id)
        receivable(instance_id, self._statuses.get(instance_id), event, repr(self))
        return self._log.append_event(instance_id, event,
                                      self._payload_blob(instance_id, event, payload))

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        return await self._log.events(instance_id)

    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        event, blob = self._log.published(event_id)
        return None if event is None else self._payload_of(instance_id, event, event_id, blob)
