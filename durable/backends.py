"""Orchestration backends: where the runtime loads and saves state and finds events."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection
from concurrent.futures import Executor
from typing import Any

from . import serialization
from .clock import SYSTEM_CLOCK, Clock
from .stores import EventLog, InMemoryStateStore, StateStore
from .stores.base import State
from .stores.blobs import with_keys
from .stores.memory import MemoryEventLog
from .stores.sealing import Codec, SecretKeys
from .waiting import wait_set

_POLL_SECONDS = 0.05


class OrchestrationBackend(ABC):
    """What a custom orchestration layer implements.

    ``wait_for_event`` blocks until the event is published. The runtime calls
    it when it resumes a paused instance on a backend that does not also offer
    ``take_event`` (the non-blocking check ``DurableBackend`` provides).
    """

    @abstractmethod
    async def load_state(self, instance_id: str) -> State | None: ...

    @abstractmethod
    async def save_state(self, instance_id: str, state: State) -> None: ...

    @abstractmethod
    async def wait_for_event(self, instance_id: str, event_name: str) -> None: ...


class DurableBackend(OrchestrationBackend):
    """The default backend: a ``StateStore`` plus its events.

    Events are kept by the store when it is an ``EventLog`` (our stores are),
    so they survive restarts and reach other processes; for other stores they
    are kept in this object's memory. Either way an event published before
    the instance waits for it is kept until the instance consumes it.
    """

    def __init__(self, state_store: StateStore | None = None, *, clock: Clock | None = None,
                 executor: Executor | None = None, secret_key: SecretKeys | None = None,
                 codec: Codec | None = None) -> None:
        """``clock``: what timers read (a ``VirtualClock`` in tests); the system clock by default.
        ``executor``: the threads sync step functions run in (by default durable's own, 100).
        ``secret_key`` and ``codec``: what the store signs and encrypts with (``open_store``)."""
        self.state_store = state_store if state_store is not None else InMemoryStateStore()
        with_keys(self.state_store, secret_key, codec)
        self.clock = clock or SYSTEM_CLOCK
        self.executor = executor
        self._log = self.state_store if isinstance(self.state_store, EventLog) else MemoryEventLog()
        self._published: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    async def load_state(self, instance_id: str) -> State | None:
        return await self.state_store.load(instance_id)

    async def save_state(self, instance_id: str, state: State) -> None:
        await self.state_store.save(instance_id, state)
        if isinstance(self._log, MemoryEventLog):
            self._log.discard(instance_id, state.get("consumed_events", ()))

    def publish_event(self, instance_id: str, event_name: str, payload: Any = None) -> None:
        """Deliver ``event_name`` to an instance (now, or whenever it waits for it); ``payload``
        is what its ``await wait_for_event(event_name)`` returns. On our stores the instance
        must have saved a state (run it until it pauses first): an unknown id raises
        ``UnknownInstanceError``, an ended instance ``InstanceEndedError``. A store that keeps
        no events (a custom ``StateStore``) takes events for any id."""
        blob = None if payload is None else serialization.dumps(payload)
        self._log.append_event(instance_id, event_name, blob)
        for loop, published in list(self._published.items()):
            if loop.is_closed():
                del self._published[loop]
            else:
                loop.call_soon_threadsafe(published.set)

    async def take_event(self, instance_id: str, event_name: str,
                         exclude: Collection[str] = ()) -> str | None:
        """The id of an unconsumed ``event_name`` event, without waiting; None if there is none."""
        for event_id, name in await self.events(instance_id):
            if name == event_name and event_id not in exclude:
                return event_id
        return None

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        """The instance's unconsumed events, ``(event_id, name)``, oldest first."""
        return await self._log.events(instance_id)

    async def event_payload(self, instance_id: str, event_id: str) -> bytes | None:
        return await self._log.payload(instance_id, event_id)

    async def wait_for_event(self, instance_id: str, event_name: str) -> None:
        """Return once ``event_name`` has been published to the instance (it is not consumed)."""
        published = self._published.setdefault(asyncio.get_running_loop(), asyncio.Event())
        while await self.take_event(instance_id, event_name) is None:
            published.clear()
            # Published in this process wakes us at once; by another process, within a poll.
            await wait_set(published, _POLL_SECONDS)
