"""StateStore: where instance state (and, for our stores, published events) is kept."""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ..errors import InstanceEndedError, InstanceExistsError, UnknownInstanceError
from ..history import KEEP

State = dict[str, Any]

DEFAULT_MAX_STATE_BYTES = 64 * 2**20  # a pickled state
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 2**20  # a pickled event payload


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
    def append_event(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        """Persist a published event; return its id. Durable once it returns. Our stores refuse
        an event nothing could consume: ``UnknownInstanceError`` if no state of the instance was
        saved, ``InstanceEndedError`` if it has ended."""

    @abstractmethod
    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        """Unconsumed events of an instance as ``(event_id, event)``, oldest first."""

    @abstractmethod
    async def payload(self, instance_id: str, event_id: str) -> bytes | None:
        """The payload an unconsumed event was published with (None if it had none)."""


# What the client shows: the envelope's statuses, named for people.
RUNNING, WAITING, FINISHED, FAILED, TERMINATED = "running", "waiting", "finished", "failed", "terminated"
SUSPENDED = "suspended"  # running or waiting, but not scheduled until resumed
BLOCKED = "blocked"  # running or waiting, but the last worker to try could not run it
STATUSES = (RUNNING, WAITING, SUSPENDED, BLOCKED, FINISHED, FAILED, TERMINATED)
_BY_ENVELOPE = {"running": RUNNING, "paused": WAITING, "completed": FINISHED, "failed": FAILED,
                "terminated": TERMINATED}
ENDED = (FINISHED, FAILED, TERMINATED)


def status_of(state: State) -> str:
    """The status a client sees for a saved state (its envelope says paused, we say waiting)."""
    return _BY_ENVELOPE[state["status"]]


def event_status(state: State | None) -> str | None:
    """What an event to this state meets: None (no instance), or its status as a client sees
    it; a state of another shape (saved by a user through ``save``) counts as running."""
    if state is None:
        return None
    return _BY_ENVELOPE.get(state.get("status"), RUNNING) if isinstance(state, dict) else RUNNING


def receivable(instance_id: str, status: str | None, event: str, where: str) -> None:
    """Refuse an event for an instance that does not exist (``status`` None) or has ended
    (``status`` as a client sees it): it would be kept for ever, consumed by nothing."""
    if status is None:
        raise UnknownInstanceError(instance_id, where)
    if status in ENDED:
        raise InstanceEndedError(instance_id, status, event)


def start_digest(state: State) -> str:
    """What a start was asked to run, as a short digest of the arguments as the start bound
    them (defaults applied), so equal starts have equal digests: the one the runtime made from
    the arguments themselves (sets in a fixed order), else one of the pickled first frame.
    Stored with the instance when it is created; compared without unpickling anything."""
    made = state.get("start_digest")
    if made is not None:
        return made
    digest = hashlib.sha256()
    for blob in state.get("frames") or ():
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.hexdigest()


def same_start(instance_id: str, program: str, digest: str | None, state: State) -> None:
    """A start of an existing instance is its handle only if it asks for the same program with
    the same arguments; else ``InstanceExistsError`` says which differs. An instance saved
    without a digest (by a release before digests, or by a program call) is compared by its
    program alone."""
    requested = state.get("program", "")
    if program != requested:
        raise InstanceExistsError(instance_id, "program", program, requested)
    if digest is not None and digest != start_digest(state):
        raise InstanceExistsError(instance_id, "arguments", program, requested)


@dataclass(frozen=True)
class InstanceInfo:
    """One instance as a store lists it, without loading its frames."""

    instance_id: str
    program: str
    status: str  # one of STATUSES
    waiting_for: str | None
    created_at: float
    updated_at: float
    reason: str | None = None  # why it was terminated, or why it is blocked
    lease_owner: str | None = None
    wake_at: float | None = None  # a waiting instance resumes by itself then (a timer, a timeout)
    blocked_by: str | None = None  # the worker that could not run it


@dataclass(frozen=True)
class HistoryEntry:
    """One thing that happened to an instance (``durable.history``): ``number`` orders them."""

    number: int
    at: float  # seconds since the epoch
    kind: str
    data: Any  # what it tells, a dict (in a store, its JSON text, sealed with a codec)


@dataclass(frozen=True)
class Lease:
    """A worker's claim on an instance. ``token`` fences its saves: it grows with every claim.

    A store may hand over, with the lease, the instance's state and its unconsumed events as
    they were when it was claimed (``(event_id, name)``, oldest first): the worker then starts
    without reading them again."""

    instance_id: str
    program: str
    token: int
    owner: str
    code: str | None = field(default=None, compare=False)  # the code it needs (a short name)
    state: State | None = field(default=None, compare=False, repr=False)
    events: list[tuple[str, str]] | None = field(default=None, compare=False, repr=False)


class InstanceStore(StateStore, EventLog):
    """A store that workers and clients share: instances are created, claimed and listed.

    An instance is *runnable* when its status is running, or it waits for an
    event that has been published and not consumed, or for a time that has
    come (``wake_at``), and no live lease holds it. ``claim`` takes runnable instances under a lease; every save of a
    leased instance goes through ``save_leased``, which is refused (``LeaseLost``)
    once the lease was taken over, so a worker that stalled cannot overwrite
    newer state. Saving a paused, finished or failed state ends the lease.
    """

    @property
    def where(self) -> str:
        """How messages name this store (never with a password)."""
        return repr(self)

    @property
    def keeps_time(self) -> bool:
        """True when the store's own clock decides lease expiry and timers (a database
        server's, shared by workers on machines whose clocks may disagree): workers read the
        time from ``now``. False: every process of the store reads one machine's wall clock."""
        return False

    async def now(self) -> float:
        """The time on the store's clock, in seconds since the epoch."""
        return time.time()

    @abstractmethod
    async def create(self, instance_id: str, state: State) -> bool:
        """Insert a new instance unless the id exists; True if this call created it. An
        existing instance started with another program or other arguments (``start_digest``)
        raises ``InstanceExistsError``; the comparison is atomic with the insert."""

    @abstractmethod
    async def publish(self, instance_id: str, event: str, payload: bytes | None = None) -> str:
        """``append_event`` for async callers (refused alike for an unknown or ended instance);
        wakes workers waiting for work."""

    @abstractmethod
    async def claim(self, owner: str, programs: Collection[str], limit: int,
                    lease_seconds: float, now: float | None = None, *,
                    refused_code: Collection[str] = (),
                    refused_ids: Collection[str] = ()) -> list[Lease]:
        """Lease up to ``limit`` runnable instances of ``programs`` to ``owner``; timers due
        at ``now`` (a test's clock; by default the store's clock, see ``keeps_time``) count as
        runnable. Skips instances that need code in ``refused_code`` and those in
        ``refused_ids``: the owner found it cannot run them, or runs them already."""

    @abstractmethod
    async def next_wake(self, programs: Collection[str]) -> float | None:
        """The earliest time a waiting instance of ``programs`` resumes by itself, if any."""

    @abstractmethod
    async def renew(self, leases: Collection[Lease], lease_seconds: float) -> list[Lease]:
        """Extend leases still held; return the ones that were lost."""

    @abstractmethod
    async def save_leased(self, lease: Lease, state: State) -> None:
        """``save`` under a lease; raises ``LeaseLost`` if the lease is no longer held."""

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give a lease back without saving (the instance becomes runnable for others)."""

    @abstractmethod
    async def block(self, lease: Lease, reason: str) -> None:
        """Give a lease back saying why its owner cannot run the instance; it shows as
        blocked, its state and events untouched, until a worker that can saves it."""

    @abstractmethod
    async def info(self, instance_id: str) -> InstanceInfo | None: ...

    @abstractmethod
    async def list(self, status: str | None = None, limit: int = 1000) -> list[InstanceInfo]:
        """Instances, newest first, optionally only those with one status of STATUSES."""

    @abstractmethod
    async def history(self, instance_id: str, after: int = 0,
                      limit: int = KEEP) -> list[HistoryEntry]:
        """The instance's history entries numbered above ``after``, oldest first."""

    @abstractmethod
    async def summary(self, instance_id: str) -> dict[str, Any] | None:
        """What the instance's last pause or end saved for people to see (``runtime.summary``),
        parsed; None if it has not paused or ended yet. Never unpickles anything."""

    @abstractmethod
    async def terminate(self, instance_id: str, reason: str) -> bool:
        """Stop an unfinished instance for good (its lease is fenced off); False if it had ended."""

    @abstractmethod
    async def retry(self, instance_id: str) -> bool:
        """Put a failed instance back to the last state it saved before it failed, to run
        again; False if it had not failed. ``ValueError`` if it failed before any save."""

    @abstractmethod
    async def unfinished(self, programs: Collection[str]) -> list[tuple[str, str, str, str | None]]:
        """Every unfinished instance of ``programs``, by id: ``(instance_id, program, status,
        positions)``, ``positions`` the JSON list of where its frames stand (None if the
        release that saved it did not record them)."""

    @abstractmethod
    async def suspend(self, instance_id: str) -> bool:
        """Stop scheduling an unfinished instance (events keep arriving); False if it ended.
        A run in progress goes on to its next pause."""

    @abstractmethod
    async def resume(self, instance_id: str) -> bool:
        """Schedule a suspended instance again; False if it was not suspended."""

    @abstractmethod
    async def wait_for_change(self, timeout: float) -> None:
        """Return when work may have appeared (a start, a publish, an ended lease) or at timeout."""

    async def close(self) -> None:
        """Release connections and threads."""


def terminated(state: State, reason: str) -> State:
    """The state a terminated instance keeps: no frames, the reason, its status for good."""
    return {**state, "status": "terminated", "reason": reason, "frames": [], "waiting_for": None,
            "wake_at": None, "updated_at": time.time()}


def consumed(state: State | None) -> set[str]:
    return set(state.get("consumed_events", ())) if state else set()
