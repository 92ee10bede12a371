"""Running code inside the exceptions being handled, as CPython does.

Blocks of a lowered ``except`` or ``finally`` clause run inside a synthetic
``except`` of the exception they handle, so ``sys.exc_info()``, a bare
``raise`` and the ``__context__`` of new exceptions behave natively. Callees
inherit the exceptions their callers are handling (a coroutine awaited in an
``except`` clause sees the caller's exception), and so does a library
coroutine awaited inline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .actions import RAISE
from .frame import FunctionCall


def active_errors(frame: FunctionCall, handling: tuple[tuple[str, bool], ...]) -> tuple[BaseException, ...]:
    """The exceptions being handled where ``frame`` stands, outermost first."""
    errors = list(frame.inherited)
    for variable, is_record in handling:
        cell = frame.cells.get(variable)
        try:
            value = cell.cell_contents if cell is not None else None
        except ValueError:
            continue
        if is_record:
            value = value[1] if value is not None and value[0] == RAISE else None
        if value is not None:
            errors.append(value)
    return tuple(errors)


def call_within(errors: tuple[BaseException, ...], block: Callable[[Any], Any], delivered: Any,
                index: int = 0) -> Any:
    if index == len(errors):
        return block(delivered)
    error = errors[index]
    traceback, context = error.__traceback__, error.__context__
    try:
        raise error
    except BaseException:
        error.__traceback__, error.__context__ = traceback, context
        return call_within(errors, block, delivered, index + 1)


async def await_within(errors: tuple[BaseException, ...], awaitable: Awaitable[Any], index: int = 0) -> Any:
    if index == len(errors):
        return await awaitable
    error = errors[index]
    traceback, context = error.__traceback__, error.__context__
    try:
        raise error
    except BaseException:
        error.__traceback__, error.__context__ = traceback, context
        return await await_within(errors, awaitable, index + 1)


INTERNAL_CODES = frozenset({call_within.__code__, await_within.__code__})
