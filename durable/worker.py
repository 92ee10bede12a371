"""Worker: runs the instances of its programs that a store has ready, each under a lease.

The loop claims up to ``concurrency`` runnable instances (started, or waiting
for an event that has arrived) and runs each in its own task with a runtime
whose every save goes through ``save_leased``: once the lease is lost (it
expired and another worker took the instance, or a client terminated it) the
save is refused, so a stalled worker cannot overwrite newer state. A renewal
task keeps the leases alive; saving a paused, finished or failed state ends
a lease.

Clocks: a worker measures durations on its monotonic clock: it renews its leases
by it, and judges by it when a lease it could not renew has expired. Lease
expiry and timers follow the store's clock: PostgreSQL's (read now and then,
see ``SyncedClock``), or on SQLite the machine's, which all its processes
share. A worker never claims an instance it is running, whatever the clocks say.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor

from .backends import DurableBackend
from .client import instance_store
from .clock import SYSTEM_CLOCK, Clock, SyncedClock
from .errors import IncompatibleStateError, LeaseLost, PauseForEventException, StoreError
from .program import DurableProgram
from .runtime.envelope import RUNNING
from .runtime.runtime import DurableRuntime
from .stores.base import InstanceStore, Lease, State
from .stores.sealing import Codec, SecretKeys

logger = logging.getLogger("durable.worker")
BLOCKED_RETRY_SECONDS = 300.0  # a worker tries an instance whose data it could not load again
CLOCK_SYNC_SECONDS = 60.0  # between two readings of the store's clock (when it keeps the time)
CLOCK_SKEW_WARNING = 5.0  # seconds between this machine's clock and the store's: worth a warning
GIVE_BACK_RETRY = (0.05, 1.0)  # seconds before the first retry of a give-back, and the longest


class _Stopped(Exception):
    """The worker is stopping: this instance's run ends here, its lease is given back."""


class LeasedBackend(DurableBackend):
    """A backend whose saves are fenced by a lease (``save_leased``); sync steps run in
    ``executor`` (the worker's threads)."""

    def __init__(self, store: InstanceStore, lease: Lease, clock: Clock | None = None,
                 renewed: float | None = None, executor: Executor | None = None) -> None:
        super().__init__(store, clock=clock, executor=executor)
        self.store = store
        self.lease = lease
        # When (time.monotonic()) the lease was last known to last lease_seconds more: taken
        # before the claim or renewal that extended it, so the worker's judgement errs early.
        self.renewed = time.monotonic() if renewed is None else renewed
        self.ended = False  # a paused, finished or failed state was saved: the lease is over
        self.lost = False  # renewal found the lease taken: every save would be refused
        self.stopping = False  # stop after the next save (the worker is stopping)
        self.abandoned = False  # save nothing more (the worker stops now)
        self.blocked = False  # given back as one this worker cannot run
        self._claimed: State | None = lease.state  # handed over with the lease: not read again
        self._events = lease.events  # as they were at the claim: good until the first save

    async def load_state(self, instance_id: str) -> State | None:
        if self._claimed is not None and instance_id == self.lease.instance_id:
            state, self._claimed = self._claimed, None
            return state
        return await super().load_state(instance_id)

    async def events(self, instance_id: str) -> list[tuple[str, str]]:
        if self._events is not None and instance_id == self.lease.instance_id:
            return self._events
        return await super().events(instance_id)

    async def save_state(self, instance_id: str, state: State) -> None:
        self._events = None
        if self.lost:
            raise LeaseLost(self.lease.instance_id, self.lease.token)
        if self.abandoned:
            raise _Stopped()
        await self.store.save_leased(self.lease, state)
        if state["status"] != RUNNING:
            self.ended = True
        elif self.stopping:
            raise _Stopped()


class Worker:
    """Runs instances of ``programs`` (``DurableProgram`` objects, found by their ``key``).

    ``await worker.run()`` until ``worker.stop()``, which may be called from
    another thread or a signal handler. Several workers, in one process or many,
    can share a store: a lease keeps each instance to one worker at a time.
    """

    def __init__(self, store: InstanceStore | str | None, programs: Iterable[DurableProgram], *,
                 concurrency: int = 100, lease_seconds: float = 30.0, poll_interval: float = 1.0,
                 name: str | None = None, clock: Clock | None = None,
                 secret_key: SecretKeys | None = None, codec: Codec | None = None) -> None:
        """``clock``: what timers read; a ``VirtualClock`` makes them fire when a test moves it.
        By default, the store's clock (see ``InstanceStore.keeps_time``). ``secret_key`` and
        ``codec``: what the store signs and encrypts with (``open_store``)."""
        self.store, self._owns_store = instance_store(store, secret_key=secret_key, codec=codec)
        self.programs: dict[str, DurableProgram] = {}
        for program in programs:
            if not isinstance(program, DurableProgram):
                raise TypeError(f"a worker runs durable programs (make_durable(fn)), "
                                f"got {program!r}")
            self.programs[program.key] = program
        if not self.programs:
            raise ValueError("a worker needs at least one durable program")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if lease_seconds <= 0 or poll_interval <= 0:
            raise ValueError("lease_seconds and poll_interval must be positive")
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval  # the longest wait between looks at the store
        self._given_clock = clock is not None  # a test's clock: claims follow it too
        self._synced = SyncedClock() if clock is None and self.store.keeps_time else None
        self._next_sync = 0.0  # when (loop time) to read the store's clock again
        self.clock = clock or self._synced or SYSTEM_CLOCK
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[asyncio.Task[None], LeasedBackend] = {}
        self._steps: ThreadPoolExecutor | None = None  # where sync steps run, while run() runs
        self._releases: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._stop = False
        self._stop_now = False
        self._claimed_once = False
        # What this worker found it cannot run: instances needing this code, these instances
        # (until the time given: their data may be fixed meanwhile).
        self._refused_code: set[str] = set()
        self._refused_ids: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<Worker {self.name} on {self.store!r}, {len(self._running)} running>"

    @property
    def running(self) -> int:
        """How many instances this worker is running now."""
        return len(self._running)

    def stop(self, now: bool = False) -> None:
        """Ask ``run`` to return: claim nothing more; each running instance stops at its next
        save (then its lease is given back) or when it pauses or ends.

        ``now=True`` also cancels running instances: nothing more of them is saved, their
        leases are given back, and what they did since their last save runs again later.
        Safe from another thread and from a signal handler.
        """
        self._stop = True
        self._stop_now = self._stop_now or now
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: run returned
                loop.call_soon_threadsafe(self._stopping)

    async def run(self) -> None:
        """Run instances until ``stop()``; return once none of them is running."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        watcher = asyncio.create_task(self._watch(), name=f"{self.name} watch")
        loop = self._loop
        unsubscribe = self.clock.subscribe(lambda: loop.call_soon_threadsafe(self._wake))
        renewer = asyncio.create_task(self._renew(), name=f"{self.name} renew")
        # Sync step functions run here, off the loop: one may block for as long as it likes
        # without holding up the other instances or the renewal of their leases.
        self._steps = steps = ThreadPoolExecutor(self.concurrency,
                                                 thread_name_prefix="durable step")
        logger.info("worker %s started on %r: %s", self.name, self.store,
                    ", ".join(sorted(self.programs)))
        try:
            await self._claim_loop()
            self._stopping()
            if self._running:
                logger.info("worker %s stopping: waiting for %d running instance(s) to reach "
                            "their next save", self.name, len(self._running))
                await asyncio.wait(list(self._running))
        except asyncio.CancelledError:
            self._cancel_all()
            if self._running:
                await asyncio.wait(list(self._running))
            raise
        finally:
            unsubscribe()
            if self._releases:
                await asyncio.wait(list(self._releases))
            watcher.cancel()
            renewer.cancel()
            await asyncio.gather(watcher, renewer, return_exceptions=True)
            # A step still running in a thread (stop(now=True)) ends on its own; nothing waits.
            steps.shutdown(wait=False, cancel_futures=True)
            if self._owns_store:
                await self.store.close()
            self._loop = None
            logger.info("worker %s stopped", self.name)

    # The loop.
    async def _claim_loop(self) -> None:
        assert self._wakeup is not None
        failures = 0
        while not self._stop:
            self._wakeup.clear()
            free = self.concurrency - len(self._running)
            if free > 0:
                try:
                    await self._sync_clock()
                    asked = time.monotonic()
                    leases = await self.store.claim(
                        self.name, self.programs, free, self.lease_seconds,
                        now=self.clock.time() if self._given_clock else None,
                        refused_code=self._refused_code,
                        refused_ids=self._still_refused() + self._running_ids())
                except (StoreError, OSError) as error:
                    if not self._claimed_once:
                        raise  # the store cannot be reached at all: the caller should know
                    failures += 1
                    logger.warning("worker %s cannot claim instances (attempt %d): %s",
                                   self.name, failures, error)
                    leases = []
                else:
                    failures = 0
                    self._claimed_once = True
                for lease in leases:
                    if self._stop:  # asked to stop while claiming: give it straight back
                        await self._release(lease, asked)
                    else:
                        self._start(lease, asked)
            await self._wakeup.wait()

    def _still_refused(self) -> list[str]:
        now = time.monotonic()
        for instance_id, until in list(self._refused_ids.items()):
            if until <= now:
                del self._refused_ids[instance_id]
        return list(self._refused_ids)

    def _running_ids(self) -> list[str]:
        """The instances this worker runs: never claimed again by it, even when their leases
        look expired (this machine's clock was stepped forward past them)."""
        return [backend.lease.instance_id for backend in self._running.values()]

    async def _sync_clock(self) -> None:
        """Read the store's clock now and then (when it keeps the time, see ``SyncedClock``),
        and warn while this machine's is far from it: leases and timers follow the store's,
        but this machine's other programs and logs do not."""
        assert self._loop is not None
        if self._synced is None or self._loop.time() < self._next_sync:
            return
        skew = self._synced.sync(await self.store.now())
        self._next_sync = self._loop.time() + CLOCK_SYNC_SECONDS
        if abs(skew) >= CLOCK_SKEW_WARNING:
            logger.warning("worker %s: this machine's clock is %.1f s %s the clock of %s; "
                           "leases and timers follow the store's clock (check NTP here)",
                           self.name, abs(skew), "ahead of" if skew > 0 else "behind",
                           self.store.where)

    async def _watch(self) -> None:
        """Wake the loop on every change in the store, and at least every ``poll_interval``
        (leases of other workers expire without a change); at each poll, schedule a wake-up
        for the earliest timer. One long-lived task, because the store remembers per task
        which changes it has seen."""
        assert self._wakeup is not None and self._loop is not None
        next_poll, polled = 0.0, None
        while True:
            try:
                if self._loop.time() >= next_poll:
                    next_poll = self._loop.time() + self.poll_interval
                    due = await self.store.next_wake(self.programs)
                    if due is not None and due != polled:
                        self._wake_at(due)
                    polled = due
                await self.store.wait_for_change(self.poll_interval)
            except (StoreError, OSError) as error:
                logger.warning("worker %s cannot watch the store: %s", self.name, error)
                await asyncio.sleep(self.poll_interval)
            self._wakeup.set()

    def _wake_at(self, when: float) -> None:
        """Claim again when the clock reaches ``when`` (a timer is due then)."""
        if self._loop is not None:
            self._loop.call_later(max(0.0, when - self.clock.time()), self._wake)

    def _wake(self) -> None:
        """On the loop: a timer may be due (its time came, or a virtual clock jumped)."""
        if self._wakeup is not None:
            self._wakeup.set()

    def _stopping(self) -> None:
        """On the loop: pass a stop request on to the loop and the running instances."""
        for backend in self._running.values():
            backend.stopping = True
        if self._stop_now:
            self._cancel_all()
        if self._wakeup is not None:
            self._wakeup.set()

    def _cancel_all(self) -> None:
        for task, backend in self._running.items():
            if not backend.ended and not backend.abandoned:
                backend.abandoned = True
                task.cancel()

    def _start(self, lease: Lease, renewed: float) -> None:
        backend = LeasedBackend(self.store, lease, self.clock, renewed, self._steps)
        task = asyncio.create_task(self._run_instance(lease, backend),
                                   name=f"durable instance {lease.instance_id}")
        self._running[task] = backend
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._wakeup is not None:
            self._wakeup.set()  # a slot is free: claim again at once
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
            logger.error("worker %s: an instance task failed", self.name,
                         exc_info=task.exception())

    # One instance.
    async def _run_instance(self, lease: Lease, backend: LeasedBackend) -> None:
        instance_id = lease.instance_id
        runtime = DurableRuntime(self.programs[lease.program], backend, instance_id)  # claimed by key
        fields = {"instance_id": instance_id, "program": lease.program, "worker": self.name}
        logger.info("instance %s of %s %s", instance_id, lease.program, _begins(lease),
                    extra=fields)
        try:
            await runtime.run()
            logger.info("instance %s of %s finished", instance_id, lease.program, extra=fields)
        except PauseForEventException as pause:
            logger.debug("instance %s waits: %s", instance_id, pause, extra=fields)
            if pause.until is not None:
                self._wake_at(pause.until.timestamp())
        except LeaseLost:
            logger.info("instance %s: lease %d was lost (taken over or terminated); dropped",
                        instance_id, lease.token)
            return
        except (_Stopped, asyncio.CancelledError):
            if backend.lost:
                logger.info("instance %s: lease %d was lost; dropped", instance_id, lease.token)
            else:
                logger.info("instance %s given back: the worker is stopping", instance_id)
        except (StoreError, OSError) as error:
            # The store, not the instance: leave it to be run again.
            logger.warning("instance %s: the store failed, giving it back: %s", instance_id, error)
        except BaseException as error:
            if backend.ended:  # the program's own error, saved as its outcome
                text = f"{type(error).__name__}: {error}"
                logger.info("instance %s of %s failed: %s", instance_id, lease.program, text,
                            extra={**fields, "error": text})
            elif not isinstance(error, Exception):
                raise
            elif backend.abandoned:
                pass
            elif isinstance(error, IncompatibleStateError):
                await self._block(lease, backend, error)
            else:
                await self._fail(runtime, backend, error)
        finally:
            if not backend.ended and not backend.lost and not backend.blocked:
                await self._release(lease, backend.renewed)

    async def _block(self, lease: Lease, backend: LeasedBackend, error: IncompatibleStateError) -> None:
        """This worker cannot run the instance (code or data it cannot load): give it back,
        saying why, without touching its state or events, and claim it no more."""
        logger.warning("instance %s cannot run on worker %s, left for a worker that can: %s",
                       lease.instance_id, self.name, error)
        if error.code_changed and lease.code is not None:
            self._refused_code.add(lease.code)
        else:
            self._refused_ids[lease.instance_id] = time.monotonic() + BLOCKED_RETRY_SECONDS
        try:
            await self.store.block(lease, str(error))
            backend.blocked = True
        except LeaseLost:
            backend.lost = True
        except Exception as store_error:
            logger.warning("instance %s: cannot record why it is blocked: %s", lease.instance_id,
                           store_error)

    async def _fail(self, runtime: DurableRuntime, backend: LeasedBackend, error: Exception) -> None:
        """The runtime raised without saving (state it cannot save): save the error, so the
        instance ends instead of failing again forever; its last save is kept for a retry."""
        text = f"{type(error).__name__}: {error}"
        logger.warning("instance %s of %s failed: it cannot run: %s; it is marked failed",
                       runtime.instance_id, runtime.program.key, text,
                       extra={"instance_id": runtime.instance_id, "program": runtime.program.key,
                              "worker": self.name, "error": text})
        try:
            await runtime.fail(error)
        except LeaseLost:
            backend.lost = True
        except Exception:
            logger.exception("instance %s: cannot save its failure", runtime.instance_id)

    async def _release(self, lease: Lease, renewed: float) -> None:
        """Give a lease back (last extended at ``renewed``, monotonic time); a cancellation
        cannot interrupt it, and ``run`` waits for it."""
        release = asyncio.ensure_future(self._give_back(lease, renewed))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)
        await asyncio.shield(release)

    async def _give_back(self, lease: Lease, renewed: float) -> None:
        """Give the lease back, and while the store does not answer (down, disk full), try
        again with backoff: the instance runs again as soon as the store is back, instead of
        waiting for its lease to expire. Gives up once the lease has expired on this worker's
        monotonic clock: anyone may claim the instance then."""
        delay, longest = GIVE_BACK_RETRY
        for attempt in itertools.count(1):
            try:
                await self.store.release(lease)
            except (StoreError, OSError) as error:
                expires_in = renewed + self.lease_seconds - time.monotonic()
                if expires_in <= delay:
                    logger.warning("instance %s: cannot give its lease back; it expires now: "
                                   "%s", lease.instance_id, error)
                    return
                if attempt == 1:
                    logger.warning("instance %s: cannot give its lease back, trying again until "
                                   "it expires in %.0f s: %s", lease.instance_id, expires_in, error)
                await asyncio.sleep(delay)
                delay = min(2 * delay, longest)
            except Exception:  # pragma: no cover - a bug: the lease expires in its time
                logger.exception("instance %s: cannot give its lease back", lease.instance_id)
                return
            else:
                if attempt > 1:
                    logger.info("instance %s: lease given back (attempt %d)", lease.instance_id,
                                attempt)
                return

    # Leases.
    async def _renew(self) -> None:
        """Extend every held lease every third of its length; stop instances that lost theirs."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = {backend.lease: (task, backend) for task, backend in self._running.items()
                    if not backend.ended}
            if not held:
                continue
            asked = time.monotonic()
            try:
                lost = await self.store.renew(list(held), self.lease_seconds)
            except Exception as error:
                logger.warning("worker %s cannot renew its leases: %s", self.name, error)
                lost = self._expired(held.values())
            else:
                for _, backend in held.values():
                    backend.renewed = asked
            for lease in lost:
                task, backend = held[lease]
                if backend.ended or task.done():
                    continue  # it paused or ended while we renewed
                logger.info("instance %s: lease %d was lost; stopping it", lease.instance_id,
                            lease.token)
                backend.lost = True
                task.cancel()

    def _expired(self, held: Iterable[tuple[asyncio.Task[None], LeasedBackend]]) -> list[Lease]:
        """The leases that expired while they could not be renewed, judged by this worker's
        monotonic clock: another worker may run their instances now, so these stop."""
        now = time.monotonic()
        return [backend.lease for _, backend in held
                if backend.renewed + self.lease_seconds <= now]


def _begins(lease: Lease) -> str:
    """How the log tells a first run from a later one: a state saved once (by its creation)
    never ran."""
    state = lease.state
    if state is None:
        return "claimed"
    return "started" if state.get("saves", 0) <= 1 and state["status"] == RUNNING else "resumed"
