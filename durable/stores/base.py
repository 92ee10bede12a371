"""StateStore: where instance state (and, for our stores, published events) is kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

State = dict[str, Any]


class StateStore(ABC):
    """Persists one state dict per instance.

    A store written against this interface (``load``/``save``) plugs into
    ``DurableBackend`` as it is; events then live in the backend's memory.
    Stores that also implement ``EventLog`` keep published events with the
    state, so a publish from one process reaches an instance resumed by another.
    """

    @abstractmethod
    async def load(self, instance_id: str) -> State | None: ...

    @abstractmethod
    async def save(self, instance_id: str, state: State) -> None: ...


class EventLog(ABC):
    """Published events, kept until the state that consumes them is saved.

    The runtime records the ids of events it consumed in the state it saves
    next (``state["consumed_events"]``); saving that state is what consumes
    them, so consuming an event and saving what follows is one atomic step.
    ``save`` may then delete them, and ``load`` finishes a deletion a crash
    interrupted.
    """

    @abstractmethod
    def append_event(self, instance_id: str, event: str) -> str:
        """Persist a published event; return its id. Durable once it returns."""

    @abstractmethod
    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        """Unconsumed events of an instance as ``(event_id, event)``, oldest first."""


def consumed(state: State | None) -> set[str]:
    return set(state.get("consumed_events", ())) if state else set()
