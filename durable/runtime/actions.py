"""The contract between compiled code blocks and the runtime that drives them.

A block returns an ``int`` to jump to that block, or a tuple whose first item
is one of the kinds below. ``RETURN``, ``JUMP`` and ``RAISE`` tuples double as
the completion records a ``finally`` clause keeps while it runs, so a record
can be handed back to the runtime as it is.
"""

from __future__ import annotations

from typing import Any

RETURN = 0  # (RETURN, value): the call returns value
JUMP = 1  # (JUMP, pc): a break/continue crossing a finally clause, as a record only
RAISE = 2  # (RAISE, error): propagate error from this block, keeping its traceback
AWAIT = 3  # (AWAIT, resume_pc, awaitable): await it, deliver the outcome at resume_pc
PAUSE = 4  # (PAUSE, resume_pc, pause_exception): wait for the event, then resume_pc


class Thrown:
    """An exception delivered to a resume block, raised there at the ``await``."""

    __slots__ = ("context", "error")

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.context = error.__context__

    def __reduce__(self) -> tuple[Any, ...]:
        return (_thrown, (self.error, self.context))


def _thrown(error: BaseException, context: BaseException | None) -> Thrown:
    thrown = Thrown(error)
    thrown.context = context
    return thrown
