"""Exceptions users see: the pause signal and every clear error the library raises."""

from __future__ import annotations

from datetime import datetime


class PauseForEventException(Exception):
    """Raise it in durable code to pause until ``event`` is published.

    A ``raise PauseForEventException("name")`` statement in durable code is a
    suspension point, not an exception: enclosing handlers never see it, and
    execution continues right after the ``raise`` once the event arrives. The
    caller of the durable program receives it when the instance pauses.
    """

    def __init__(self, event: str | None, until: datetime | None = None):
        self.event = event  # None: a durable timer (``sleep``) with nothing else to wait for
        self.until = until  # when a timer or an event's timeout resumes it; None: never by itself
        if until is None:
            message = f"Execution waiting for event {event}"
        elif event is None:
            message = f"Execution waiting until {until.isoformat()}"
        else:
            message = f"Execution waiting for event {event} until {until.isoformat()}"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.event, self.until))


class DurableError(Exception):
    """Base class of the errors raised by the library itself."""


class EventTimeout(DurableError, TimeoutError):
    """``wait_for_event(name, timeout=...)`` saw no event before its timeout (and had no default)."""

    def __init__(self, event: str, timeout: float):
        self.event = event
        self.timeout = timeout
        super().__init__(f"event {event!r} did not arrive within {timeout:g} s")

    def __reduce__(self):
        return (type(self), (self.event, self.timeout))


CANCEL_EVENT = "durable:cancel"  # what Client.cancel publishes


class Cancelled(DurableError):
    """``Client.cancel`` asked the instance to stop: raised where it waits, so its ``except``
    and ``finally`` blocks run (compensations); unhandled, the instance fails with it."""

    def __init__(self, instance_id: str, reason: str | None = None):
        self.instance_id = instance_id
        self.reason = reason
        super().__init__(f"instance {instance_id!r} was cancelled: {reason or 'no reason given'}")

    def __reduce__(self):
        return (type(self), (self.instance_id, self.reason))


class StepInterrupted(DurableError):
    """A step's attempt was cut off by a crash, and may not run again: it is ``at_most_once``,
    or it was its last attempt. Whether its side effect happened is unknown."""

    def __init__(self, step: str, attempt: int):
        self.step = step
        self.attempt = attempt
        super().__init__(f"step {step!r} was interrupted during attempt {attempt} (the process "
                         "running it stopped) and is not run again: its effect may or may not "
                         "have happened")

    def __reduce__(self):
        return (type(self), (self.step, self.attempt))


class NotInDurableCode(DurableError):
    """A durable primitive (``sleep``, ``wait_for_event``, ``step``...) was awaited outside
    durable code, where nothing can save or resume it."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"{what} was awaited outside durable code: await it in a function "
                         "passed to make_durable() or in an async def such a function awaits, "
                         "not in a plain coroutine or task")

    def __reduce__(self):
        return (type(self), (self.what,))


class CompileError(DurableError):
    """A construct in a function cannot be made durable.

    Raised by ``make_durable`` (or when durable code first awaits a user
    function), naming the construct, the function and the line.
    """

    def __init__(self, message: str, *, function: str, filename: str, lineno: int):
        self.function = function
        self.filename = filename
        self.lineno = lineno
        super().__init__(f"{message} (in {function}, {filename}, line {lineno})")


class SerializationError(DurableError):
    """Part of the program state could not be saved; nothing was written."""

    def __init__(self, message: str, *, function: str | None = None,
                 variable: str | None = None, type_name: str | None = None):
        self.function = function
        self.variable = variable
        self.type_name = type_name
        super().__init__(message)


class IncompatibleStateError(DurableError):
    """Saved state cannot be resumed by the code running now.

    ``code_changed``: the code is what differs (a changed or missing function), so every
    instance that needs the same code is refused alike; else it is this instance's data (a
    state or an event payload that cannot be loaded). A worker leaves such an instance
    blocked, intact, for a worker that can run it."""

    def __init__(self, message: str, *, function: str | None = None, code_changed: bool = False):
        self.function = function
        self.code_changed = code_changed
        super().__init__(message)


class UnverifiedDataError(IncompatibleStateError):
    """A blob read back from a store did not verify: it was altered, or signed with another key
    (``stores.sealing``). It was not unpickled; a worker leaves the instance blocked, its state
    and events untouched."""

    def __init__(self, what: str, problem: str):
        self.what = what
        super().__init__(f"{what} {problem}; it was not loaded")


class FailedInstanceError(DurableError):
    """Stands in for an instance's error whose own type could not be saved and rebuilt."""

    def __init__(self, type_name: str, message: str):
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")


class UnsupportedPauseError(DurableError):
    """A PauseForEventException escaped code that is not durable (a plain helper function).

    The instance cannot resume in the middle of such code, so nothing is saved: the
    instance stays at its last save.
    """

    def __init__(self, message: str, *, event: str | None = None):
        self.event = event
        super().__init__(message)

    @classmethod
    def for_error(cls, pause: PauseForEventException) -> UnsupportedPauseError:
        where = ""
        tb = pause.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            code = tb.tb_frame.f_code
            where = f" in {code.co_qualname}() ({code.co_filename}, line {tb.tb_lineno})"
        return cls(
            f"PauseForEventException({pause.event!r}) was raised{where}, not by a "
            "`raise PauseForEventException(...)` statement in durable code: an instance can only "
            "pause at such a statement (in a durable function or an async def it awaits). "
            "The instance stays at its last save.",
            event=pause.event,
        )


class StoreError(DurableError):
    """A store cannot be opened or reached: a bad URL, a database that does not answer."""


class StoreURLError(StoreError):
    """A store URL that cannot name a store (an unknown scheme, no path, a malformed connection
    string): the URL itself is wrong, whatever the store holds or whether it answers."""


class UnknownInstanceError(DurableError, LookupError):
    """No instance has this id in the store."""

    def __init__(self, instance_id: str, where: str):
        self.instance_id = instance_id
        super().__init__(f"no instance {instance_id!r} in {where}")


class LeaseLost(DurableError):
    """A worker's lease on an instance expired and another took it (or it was terminated).

    The worker's save was refused, so it cannot overwrite newer state; it drops the instance.
    """

    def __init__(self, instance_id: str, token: int):
        self.instance_id = instance_id
        self.token = token
        super().__init__(f"lease {token} on instance {instance_id!r} is no longer held; "
                         "the save was refused")


class InstanceTerminated(DurableError):
    """The instance was terminated (``Client.terminate``); it will not run again."""

    def __init__(self, instance_id: str, reason: str | None):
        self.instance_id = instance_id
        self.reason = reason
        super().__init__(f"instance {instance_id!r} was terminated: {reason or 'no reason given'}")

    def __reduce__(self):
        return (type(self), (self.instance_id, self.reason))


class InstanceExistsError(DurableError):
    """A start named an instance that exists already with another program or other arguments:
    the start is refused (the same program with the same arguments returns its handle)."""

    def __init__(self, instance_id: str, differs: str, existing: str, requested: str):
        self.instance_id = instance_id
        self.differs = differs  # "program" or "arguments"
        detail = (f"it runs {existing}, not {requested}" if differs == "program"
                  else f"it was started with other arguments than this start of {requested}")
        super().__init__(f"instance {instance_id!r} exists already and {detail}: "
                         "choose another instance id, or start it with what it was started with")


class InstanceEndedError(DurableError):
    """An event was published to an instance that has ended: nothing would ever consume it."""

    def __init__(self, instance_id: str, status: str, event: str):
        self.instance_id = instance_id
        self.status = status
        self.event = event
        super().__init__(f"event {event!r} not published: instance {instance_id!r} has ended "
                         f"({status}), nothing would consume it")


class TooLargeError(DurableError, ValueError):
    """A state or an event payload is larger than the store's limit; nothing was written."""

    def __init__(self, instance_id: str, what: str, size: int, limit: int, option: str):
        self.instance_id = instance_id
        self.size = size
        self.limit = limit
        super().__init__(f"{what} of instance {instance_id!r} is {size:,} bytes, over the store's "
                         f"limit of {limit:,} bytes ({option}); nothing was written")
