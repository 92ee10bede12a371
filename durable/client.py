"""Client: start instances, publish events, read status and results; workers do the running.

A client never runs user code. ``start`` saves the state a fresh start would
save (the arguments bound into the first frame) and any ``Worker`` serving
the program picks it up from the store. Every call fails with a ``StoreError``
if the store does not answer within the client's ``timeout``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from . import serialization
from .backends import DurableBackend
from .deploy_check import InstanceCheck, check
from .errors import CANCEL_EVENT, DurableError, InstanceEndedError, StoreError, UnknownInstanceError
from .ids import check_instance_id
from .program import DurableProgram
from .runtime.runtime import DurableRuntime, outcome
from .stores.base import ENDED, STATUSES, HistoryEntry, InstanceInfo, InstanceStore
from .stores.blobs import with_keys
from .stores.sealing import Codec, SecretKeys
from .stores.urls import open_store, redact

if TYPE_CHECKING:
    from .stores.base import StateStore

# How long a waiting client sleeps between looks when the store signals no change.
_RECHECK_SECONDS = 1.0
DEFAULT_TIMEOUT = 5.0  # seconds a client waits for the store's answer to one call

T = TypeVar("T")


class InstanceNotEnded(DurableError):
    """``result(wait=False)`` of an instance that is still running or waiting."""

    def __init__(self, instance_id: str, status: str, waiting_for: str | None = None):
        self.instance_id = instance_id
        self.status = status
        self.waiting_for = waiting_for
        detail = f" for event {waiting_for!r}" if waiting_for else ""
        super().__init__(f"instance {instance_id!r} has no result yet: it is {status}{detail}")


def instance_store(store: InstanceStore | str | None, *, create: bool = True,
                   secret_key: SecretKeys | None = None,
                   codec: Codec | None = None) -> tuple[InstanceStore, bool]:
    """The store to use, and whether we opened it (then we close it too); ``create``,
    ``secret_key`` and ``codec``: see ``open_store``."""
    if store is None or isinstance(store, str):
        opened: StateStore = open_store(store, create=create, secret_key=secret_key, codec=codec)
        if not isinstance(opened, InstanceStore):
            raise StoreError(f"the store {redact(store or 'default')!r} ({type(opened).__name__}) "
                             "cannot be shared by clients and workers: use sqlite:///file.db "
                             "or postgresql://user@host/database")
        return opened, True
    if not isinstance(store, InstanceStore):
        raise TypeError(f"clients and workers need an InstanceStore or a store URL, "
                        f"got {type(store).__name__}")
    with_keys(store, secret_key, codec)
    return store, False


class Client:
    """Talks to the instances in one store: ``Client()``, ``Client("sqlite:///app.db")`` or
    ``Client(store)``. Without a store, ``$DURABLE_STORE`` or SQLite in ``./durable.db``.
    ``create=False``: a URL must name a store that exists (``StoreError`` otherwise), for
    callers that only look and must not leave an empty store where a path has a typo.
    ``timeout``: how long each call waits for the store to answer (a database that is down,
    unreachable or hung) before it fails with ``StoreError``. ``secret_key`` and ``codec``:
    what the store signs and encrypts with (``open_store``)."""

    def __init__(self, store: InstanceStore | str | None = None, *, create: bool = True,
                 timeout: float = DEFAULT_TIMEOUT, secret_key: SecretKeys | None = None,
                 codec: Codec | None = None) -> None:
        if isinstance(timeout, bool) or not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"Client timeout must be a positive number of seconds, "
                             f"got {timeout!r}")
        self.timeout = float(timeout)
        self.store, self._owns_store = instance_store(store, create=create,
                                                      secret_key=secret_key, codec=codec)

    def __repr__(self) -> str:
        return f"Client({self.store!r})"

    async def close(self) -> None:
        """Close the store if this client opened it from a URL."""
        if self._owns_store:
            await self.store.close()

    async def _ask(self, call: Awaitable[T], waits: float = 0.0) -> T:
        """The store's answer to ``call`` (which may wait ``waits`` seconds by design), or a
        ``StoreError`` once it has not answered within ``timeout`` more: a client never hangs
        on a store that is down or unreachable."""
        try:  # not wait_for: on 3.11 it loses a cancellation that lands as the call answers
            async with asyncio.timeout(self.timeout + waits):
                return await call
        except TimeoutError:
            raise StoreError(f"{self.store.where} did not answer within {self.timeout:g} s "
                             "(is it down or unreachable?); a change asked for may still be "
                             "made when it answers") from None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self, program: DurableProgram, *args: Any, instance_id: str | None = None,
                    **kwargs: Any) -> InstanceHandle:
        """Create an instance of ``program`` for workers to run; runs none of its code.

        Idempotent: if ``instance_id`` exists already, started with the same program and the
        same arguments, its handle is returned and nothing changes (so a retried start, or two
        processes starting it at once, start it once; ``handle.created`` says whether this call
        did). Another program or other arguments raise ``InstanceExistsError``. Without
        ``instance_id``, a new random one; a given id must be valid (``durable.ids``).
        """
        if not isinstance(program, DurableProgram):
            raise TypeError(f"start() needs a durable program (make_durable(fn)), "
                            f"got {type(program).__name__}")
        instance_id = str(uuid.uuid4()) if instance_id is None else check_instance_id(instance_id)
        runtime = DurableRuntime(program, DurableBackend(self.store), instance_id)
        state = runtime.initial_state(*args, **kwargs)
        state["start_digest"] = runtime.start_digest()
        created = await self._ask(self.store.create(instance_id, state))
        return InstanceHandle(self, instance_id, created=created)

    def handle(self, instance_id: str) -> InstanceHandle:
        """A handle on an existing instance (not checked until it is used)."""
        return InstanceHandle(self, instance_id)

    async def publish_event(self, instance_id: str, name: str, payload: Any = None) -> None:
        """Deliver event ``name`` to an instance, now or whenever it waits for it. An unknown
        id raises ``UnknownInstanceError``, an ended instance ``InstanceEndedError``: nothing
        would ever consume the event."""
        blob = None if payload is None else serialization.dumps(payload)
        await self._ask(self.store.publish(instance_id, name, blob))

    async def status(self, instance_id: str) -> InstanceInfo:
        """Running, waiting (``waiting_for`` names the event), finished, failed or terminated."""
        info = await self._ask(self.store.info(instance_id))
        if info is None:
            raise UnknownInstanceError(instance_id, self.store.where)
        return info

    async def wait_for_status(self, instance_id: str, *statuses: str,
                              timeout: float | None = None) -> InstanceInfo:
        """Wait until the instance has one of ``statuses`` (``"waiting"``...), or has ended (an
        ended instance changes no more: check the status returned); ``TimeoutError`` after
        ``timeout`` seconds."""
        for status in statuses:
            _check_status(status)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            info = await self.status(instance_id)
            if info.status in statuses or info.status in ENDED:
                return info
            left = _RECHECK_SECONDS if deadline is None else deadline - loop.time()
            if left <= 0:
                detail = f" for event {info.waiting_for!r}" if info.waiting_for else ""
                goal = "end" if set(statuses) == set(ENDED) else f"become {' or '.join(statuses)}"
                raise TimeoutError(f"instance {instance_id!r} did not {goal} within {timeout} s "
                                   f"(it is {info.status}{detail})")
            wait = min(left, _RECHECK_SECONDS)
            await self._ask(self.store.wait_for_change(wait), waits=wait)

    async def result(self, instance_id: str, wait: bool = True, timeout: float | None = None) -> Any:
        """The result of a finished instance; a failed one raises its error, a terminated one
        ``InstanceTerminated``. With ``wait`` it waits until the instance ends (``TimeoutError``
        after ``timeout`` seconds); without, an unfinished instance raises ``InstanceNotEnded``."""
        if wait:
            info = await self.wait_for_status(instance_id, *ENDED, timeout=timeout)
        else:
            info = await self.status(instance_id)
        if info.status not in ENDED:
            raise InstanceNotEnded(instance_id, info.status, info.waiting_for)
        state = await self._ask(self.store.load(instance_id))
        if state is None:  # pragma: no cover - deleted between the two reads
            raise UnknownInstanceError(instance_id, self.store.where)
        return outcome(state, instance_id)

    async def terminate(self, instance_id: str, reason: str) -> bool:
        """Stop an unfinished instance for good; False if it had already ended.

        A worker running it cannot save it any more (its lease is fenced off), so
        it stops at its next save; waiting callers get ``InstanceTerminated``.
        """
        await self.status(instance_id)
        return await self._ask(self.store.terminate(instance_id, reason))

    async def cancel(self, instance_id: str, reason: str | None = None) -> bool:
        """Raise ``Cancelled(reason)`` in the instance where it waits (a running one sees it
        within about a second, at its next await), so its ``except`` and ``finally`` blocks
        run; unhandled, it fails
        with it. Unlike ``terminate``, the instance decides how it ends. False if it had
        ended."""
        if (await self.status(instance_id)).status in ENDED:
            return False
        try:
            await self._ask(self.store.publish(instance_id, CANCEL_EVENT,
                                               serialization.dumps(reason)))
        except InstanceEndedError:  # it ended meanwhile
            return False
        return True

    async def suspend(self, instance_id: str) -> bool:
        """Stop scheduling the instance: events published meanwhile are kept; a run in progress
        goes on to its next pause. False if it had ended or was suspended already."""
        return await self._ask(self.store.suspend(instance_id))

    async def resume(self, instance_id: str) -> bool:
        """Schedule a suspended instance again; False if it was not suspended."""
        return await self._ask(self.store.resume(instance_id))

    async def retry(self, instance_id: str) -> bool:
        """Run a failed instance again from the last state it saved before it failed, on the
        code workers have now (moved onto it if its code changed, see ``check``). False if it
        had not failed; ``ValueError`` if it failed before it saved anything."""
        await self.status(instance_id)
        return await self._ask(self.store.retry(instance_id))

    async def check(self, programs: Iterable[DurableProgram]) -> list[InstanceCheck]:
        """Whether each unfinished instance of ``programs`` can run on the code this process
        has (before deploying it): per frame, unchanged, moves (old line -> new line), a
        migration hook decides, or stays, and why. Reads the store's metadata only: no state
        is loaded and no instance code runs."""
        return await self._ask(check(self.store, list(programs)))

    async def custom_status(self, instance_id: str) -> Any:
        """What the instance last gave ``set_status`` (None if it never did)."""
        await self.status(instance_id)
        state = await self._ask(self.store.load(instance_id))
        return None if state is None else state.get("custom_status")

    async def summary(self, instance_id: str) -> dict[str, Any] | None:
        """Where the instance stands as its last pause or end saved it, for people to see
        (``durable.runtime.summary``): each branch's frames at source level with their
        variables as bounded reprs, what it waits for, how it ended. None until it first
        pauses or ends. Reads plain JSON: nothing is unpickled."""
        return await self._ask(self.store.summary(instance_id))

    async def history(self, instance_id: str, after: int = 0) -> list[HistoryEntry]:
        """What happened to the instance, oldest first (``durable.history``): the entries
        numbered above ``after`` (to follow it: pass the last number seen). Plain JSON data:
        nothing is unpickled."""
        return await self._ask(self.store.history(instance_id, after))

    async def list(self, status: str | None = None, limit: int = 1000) -> list[InstanceInfo]:
        """Instances, newest first; ``status`` keeps those with one status (``"waiting"``...)."""
        if status is not None:
            _check_status(status)
        return await self._ask(self.store.list(status, limit))


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")


class InstanceHandle:
    """One instance, as returned by ``Client.start``; ``created``: that start created it (False
    when it existed already, and for ``Client.handle``)."""

    def __init__(self, client: Client, instance_id: str, *, created: bool = False) -> None:
        self.client = client
        self.instance_id = instance_id
        self.created = created

    def __repr__(self) -> str:
        return f"<InstanceHandle {self.instance_id!r}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, InstanceHandle) and other.instance_id == self.instance_id
                and other.client is self.client)

    def __hash__(self) -> int:
        return hash(self.instance_id)

    async def status(self) -> InstanceInfo:
        return await self.client.status(self.instance_id)

    async def result(self, wait: bool = True, timeout: float | None = None) -> Any:
        return await self.client.result(self.instance_id, wait=wait, timeout=timeout)

    async def wait_for_status(self, *statuses: str, timeout: float | None = None) -> InstanceInfo:
        return await self.client.wait_for_status(self.instance_id, *statuses, timeout=timeout)

    async def publish_event(self, name: str, payload: Any = None) -> None:
        await self.client.publish_event(self.instance_id, name, payload)

    async def terminate(self, reason: str) -> bool:
        return await self.client.terminate(self.instance_id, reason)

    async def cancel(self, reason: str | None = None) -> bool:
        return await self.client.cancel(self.instance_id, reason)

    async def suspend(self) -> bool:
        return await self.client.suspend(self.instance_id)

    async def resume(self) -> bool:
        return await self.client.resume(self.instance_id)

    async def custom_status(self) -> Any:
        return await self.client.custom_status(self.instance_id)
