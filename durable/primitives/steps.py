"""Steps: side effects with a checkpointed result, retries on durable timers, at-most-once.

``await step(charge, order, retry=RetryPolicy(max_attempts=5))`` runs
``charge(order)`` (sync or async) inline and saves its result before the
program goes on, so a finished step never runs again. With a retry policy,
the start of every attempt is saved before it runs, so across crashes a step
never runs more than ``max_attempts`` times: an attempt a crash interrupted
counts as a failed one. With ``at_most_once=True`` such an attempt is never
run again; the program gets ``StepInterrupted`` instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .. import history
from ..clock import as_datetime, timer_time
from ..errors import StepInterrupted
from .base import Deliver, Outcome, Primitive, Run, Suspend, Throw, seconds_of

logger = logging.getLogger("durable.step")


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried.

    The wait before attempt ``n + 1`` is ``initial_delay * backoff ** (n - 1)``,
    at most ``max_delay``, then spread by ``jitter`` (0.1: up to 10% shorter
    or longer). An error is retried if it is an instance of ``retry_on`` and
    not of ``never_retry_on``; the last error is raised once the attempts are
    used up.
    """

    max_attempts: int = 3
    initial_delay: float | timedelta = 1.0
    backoff: float = 2.0
    max_delay: float | timedelta = 60.0
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    never_retry_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"RetryPolicy(max_attempts=...) must be a whole number of at least 1, "
                             f"got {self.max_attempts!r}")
        seconds_of(self.initial_delay, "RetryPolicy(initial_delay=...)")
        seconds_of(self.max_delay, "RetryPolicy(max_delay=...)")
        if self.backoff < 1:
            raise ValueError(f"RetryPolicy(backoff=...) must be at least 1, got {self.backoff!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy(jitter=...) must be between 0 and 1, got {self.jitter!r}")
        for field in ("retry_on", "never_retry_on"):
            value = getattr(self, field)
            if isinstance(value, type):
                object.__setattr__(self, field, (value,))
            elif not all(isinstance(kind, type) and issubclass(kind, BaseException)
                         for kind in getattr(self, field)):
                raise TypeError(f"RetryPolicy({field}=...) must be exception classes, got {value!r}")

    def retries(self, error: BaseException) -> bool:
        return isinstance(error, self.retry_on) and not isinstance(error, self.never_retry_on)

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1 for the first) failed."""
        initial = seconds_of(self.initial_delay, "initial_delay")
        ceiling = seconds_of(self.max_delay, "max_delay")
        base = min(initial * self.backoff ** (failed_attempt - 1), ceiling)
        if not self.jitter:
            return base
        return base * (1 + self.jitter * (2 * (rng or random).random() - 1))


NO_RETRY = RetryPolicy(max_attempts=1)


class StepRun(Primitive):
    """One awaited step: the call to make and how far it got."""

    __slots__ = ("args", "at_most_once", "attempt", "error", "fn", "kwargs", "name", "policy",
                 "running", "wake_at")
    checkpoint_result = True

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 policy: RetryPolicy | None, name: str, at_most_once: bool) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.policy = policy
        self.name = name
        self.at_most_once = at_most_once
        self.attempt = 0  # attempts started
        self.running = False  # an attempt was saved as started and has not ended
        self.wake_at: float | None = None  # waiting before the next attempt
        self.error: str | None = None  # the last attempt's error, for status and messages

    @property
    def counted(self) -> bool:
        """Attempts are saved before they run (so a crash cannot add one)."""
        return self.policy is not None or self.at_most_once

    async def advance(self, run: Run) -> Outcome:
        if self.wake_at is not None:
            if run.clock.time() < self.wake_at:
                return Suspend(None, self.wake_at, changed=False)
            self.wake_at = None
        if self.running:  # saved as started, never ended: the process died during it
            self.running = False
            interrupted = StepInterrupted(self.name, self.attempt)
            if self.at_most_once or not self._attempts_left():
                self._log_failure(run, interrupted, None)
                return Throw(interrupted)
            return self._retry_later(interrupted, run)
        self.attempt += 1
        if self.counted:
            self.running = True
            await run.checkpoint()
        started = time.monotonic()
        try:
            result = await _call(_target(self.fn), self.args, self.kwargs, run)
        except Exception as error:
            self.running = False
            if self.policy is None or not self.policy.retries(error) or not self._attempts_left():
                if self.attempt > 1:
                    error.add_note(f"step {self.name!r} failed at attempt {self.attempt} of "
                                   f"{self.policy.max_attempts if self.policy else 1}")
                self._log_failure(run, error, None)
                return Throw(error)
            return self._retry_later(error, run)
        self.running = False
        run.record(history.STEP_COMPLETED, step=self.name, attempts=self.attempt,
                   seconds=round(time.monotonic() - started, 6))
        return Deliver(result)

    def _attempts_left(self) -> bool:
        return self.policy is not None and self.attempt < self.policy.max_attempts

    def _retry_later(self, error: BaseException, run: Run) -> Outcome:
        assert self.policy is not None
        self.error = f"{type(error).__name__}: {error}"
        self.wake_at = timer_time(run.clock.time() + self.policy.delay(self.attempt))
        self._log_failure(run, error, self.wake_at)
        return Suspend(None, self.wake_at)

    def _log_failure(self, run: Run, error: BaseException, retry_at: float | None) -> None:
        """One INFO line per failed attempt, with when the next one runs (if one does): what
        an operator looks for first when an instance seems stuck; and its history entry."""
        attempts = self.policy.max_attempts if self.policy else 1
        text = f"{type(error).__name__}: {error}"
        run.record(history.STEP_FAILED, step=self.name, attempt=self.attempt, of=attempts,
                   error=text, retry_at=retry_at)
        if not logger.isEnabledFor(logging.INFO):
            return
        retry = None if retry_at is None else as_datetime(retry_at).isoformat()
        logger.info("instance %s: step %r attempt %d of %d failed: %s; %s", run.instance_id,
                    self.name, self.attempt, attempts, text,
                    "no attempt left" if retry is None else f"next attempt at {retry}",
                    extra={"instance_id": run.instance_id, "program": run.program,
                           "step": self.name, "attempt": self.attempt, "error": text,
                           "next_retry": retry})

    def describe(self) -> str:
        return f"step {self.name!r}"

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(_FIELDS, state, strict=True):
            setattr(self, name, value)


_FIELDS = ("fn", "args", "kwargs", "policy", "name", "at_most_once", "attempt", "running",
           "wake_at", "error")


class StepFunction(Primitive):
    """A function decorated with ``@step``: calling it returns the step to await, and
    ``await step(fn)`` awaits it with no arguments. Saved by reference (module and name),
    like the function it replaces.
    """

    def __init__(self, fn: Callable[..., Any], policy: RetryPolicy | None, name: str | None,
                 at_most_once: bool) -> None:
        functools.update_wrapper(self, fn)
        self._options = (policy, name or fn.__qualname__, at_most_once)

    def __call__(self, *args: Any, **kwargs: Any) -> StepRun:
        policy, name, at_most_once = self._options
        return StepRun(self, args, kwargs, policy, name, at_most_once)

    def begin(self) -> StepRun:
        return self()

    def describe(self) -> str:
        return f"step {self._options[1]!r}"

    def __reduce__(self) -> str | tuple[Any, ...]:
        module = sys.modules.get(self.__module__)
        if module is not None and _attribute(module, self.__qualname__) is self:
            return self.__qualname__  # decorated: by reference, like the function it replaced
        return (StepFunction, (self.__wrapped__, *self._options))

    def __repr__(self) -> str:
        return f"<step {self._options[1]!r}>"


def _attribute(module: Any, qualname: str) -> Any:
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                run: Run) -> Any:
    """One attempt: an async function runs on the loop, a plain one in a thread (it may block:
    the loop goes on running other instances and renewing their leases). Saves need not wait
    for either: the frame stands still."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        return await fn(*args, **kwargs)
    result = await run.call_sync(fn, args, kwargs)
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        result = await result
    return result


def _target(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn.__wrapped__ if isinstance(fn, StepFunction) else fn


def step(fn: Callable[..., Any] | None = None, *args: Any, retry: RetryPolicy | None = None,
         name: str | None = None, at_most_once: bool = False, **kwargs: Any) -> Any:
    """``await step(fn, *args, retry=..., name=..., at_most_once=..., **kwargs)`` runs a step;
    ``@step`` and ``@step(retry=...)`` make every call of a function one."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"step(retry=...) needs a RetryPolicy, got {type(retry).__name__}")
    if fn is None:
        return lambda function: step(function, retry=retry, name=name, at_most_once=at_most_once)
    if not callable(fn):
        raise TypeError(f"step() needs a function to run, got {type(fn).__name__}")
    if isinstance(fn, StepFunction):
        return fn(*args, **kwargs)
    if args or kwargs or not inspect.isfunction(fn):
        return StepRun(fn, args, dict(kwargs), retry, name or _name(fn), at_most_once)
    return StepFunction(fn, retry, name, at_most_once)  # ``@step``, or ``await step(fn)``


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
