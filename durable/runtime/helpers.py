"""Names compiled code blocks call, with CPython's own semantics and error messages.

Blocks reach these through closure cells named with the function's reserved
prefix, so a user's globals can never shadow them.
"""

from __future__ import annotations

import builtins
import operator
import sys
import types
from collections.abc import Container
from typing import Any

from ..errors import PauseForEventException
from .actions import Thrown

_MISSING = object()
_NOT_AN_EXCEPTION = "catching classes that do not inherit from BaseException is not allowed"


def exception_matches(error: BaseException, spec: Any) -> bool:
    """What an ``except spec:`` clause does to decide whether it handles ``error``."""
    items = spec if isinstance(spec, tuple) else (spec,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(_NOT_AN_EXCEPTION)
    return isinstance(error, spec)


def _lookup_special(obj: Any, attribute: str) -> Any:
    """``type(obj).<attribute>`` bound to obj, the way the interpreter finds dunder methods."""
    for klass in type(obj).__mro__:
        if attribute in klass.__dict__:
            found = klass.__dict__[attribute]
            get = getattr(type(found), "__get__", None)
            return get(found, obj, type(obj)) if get is not None else found
    return _MISSING


def _enter(manager: Any, enter: str, exit_: str, protocol: str) -> tuple[Any, Any]:
    """Look up both methods on the type (first enter, then exit, as CPython does), then enter."""
    bound_enter = _lookup_special(manager, enter)
    if bound_enter is _MISSING:
        raise TypeError(f"'{type(manager).__name__}' object does not support the {protocol} protocol")
    bound_exit = _lookup_special(manager, exit_)
    if bound_exit is _MISSING:
        raise TypeError(
            f"'{type(manager).__name__}' object does not support the {protocol} protocol "
            f"(missed {exit_} method)"
        )
    return bound_exit, bound_enter()


def enter_with(manager: Any) -> tuple[Any, Any]:
    """Start a ``with`` block: the bound ``__exit__`` and the value of ``__enter__()``."""
    return _enter(manager, "__enter__", "__exit__", "context manager")


def enter_async_with(manager: Any) -> tuple[Any, Any]:
    """Start an ``async with`` block: the bound ``__aexit__`` and the awaitable of ``__aenter__()``."""
    return _enter(manager, "__aenter__", "__aexit__", "asynchronous context manager")


_SEQUENCE = 0
_RANGE = 1


def loop_iterator(iterable: Any) -> Any:
    """The iterator a ``for`` loop that suspends keeps in its frame.

    Over a list, tuple, string or range it is a plain list (a *cursor*) rather than
    CPython's iterator: it steps the same way, and it is saved as plain data, which is
    several times cheaper than pickling an iterator object.
    """
    kind = type(iterable)
    if kind is list or kind is tuple or kind is str:
        return [_SEQUENCE, iterable, 0]  # sequence, next index
    if kind is range:
        return [_RANGE, iterable.start, iterable.step, len(iterable)]  # next value, step, items left
    return iter(iterable)


def loop_next(iterator: Any) -> Any:
    """``next()`` for what ``loop_iterator`` returned."""
    if iterator.__class__ is not list:
        return next(iterator)
    if iterator[0] == _SEQUENCE:
        sequence, index = iterator[1], iterator[2]
        if index < len(sequence):  # checked every step, as list iterators do: appends are seen
            iterator[2] = index + 1
            return sequence[index]
        raise StopIteration
    if iterator[3] > 0:
        value = iterator[1]
        iterator[1] = value + iterator[2]
        iterator[3] -= 1
        return value
    raise StopIteration


def async_iterator(iterable: Any) -> Any:
    """``async for``'s first step."""
    make = _lookup_special(iterable, "__aiter__")
    if make is _MISSING:
        raise TypeError(
            f"'async for' requires an object with __aiter__ method, got {type(iterable).__name__}"
        )
    iterator = make()
    if _lookup_special(iterator, "__anext__") is _MISSING:
        raise TypeError(
            "'async for' received an object from __aiter__ that does not implement "
            f"__anext__: {type(iterator).__name__}"
        )
    return iterator


def async_next(iterator: Any) -> Any:
    """The awaitable ``async for`` awaits for each item."""
    return _lookup_special(iterator, "__anext__")()


_FREE_UNBOUND = "cannot access free variable '{}' where it is not associated with a value in enclosing scope"
_LOCAL_UNBOUND = "cannot access local variable '{}' where it is not associated with a value"


def unbound_local(error: BaseException, names: Container[str]) -> UnboundLocalError | None:
    """The ``UnboundLocalError`` CPython raises where a block raised ``error``, else None.

    A block holds the function's variables in closure cells, so the interpreter reports
    an unbound one as a free variable (a ``NameError``); to the user's code they are
    locals. Only an error raised in the block's own frame (its traceback has one entry),
    for one of ``names`` (the function's own variables), is one of these: a closure's
    unbound free variable, or a variable of an enclosing function, is a ``NameError`` in
    plain Python too.
    """
    tb = error.__traceback__
    name = getattr(error, "name", None)
    if (error.__class__ is not NameError or tb is None or tb.tb_next is not None
            or name not in names or str(error) != _FREE_UNBOUND.format(name)):
        return None
    local = UnboundLocalError(_LOCAL_UNBOUND.format(name))
    local.__context__, local.__suppress_context__ = error.__context__, error.__suppress_context__
    return local.with_traceback(tb)


# Every name a block may use, without the prefix.
BLOCK_HELPERS: dict[str, Any] = {
    "Thrown": Thrown,
    "Pause": PauseForEventException,
    "type": builtins.type,
    "isinstance": builtins.isinstance,
    "iter": loop_iterator,
    "next": loop_next,
    "set": builtins.set,
    "slice": builtins.slice,
    "StopIteration": StopIteration,
    "StopAsyncIteration": StopAsyncIteration,
    "BaseException": BaseException,
    "aiter": async_iterator,
    "anext": async_next,
    "matches": exception_matches,
    "enter": enter_with,
    "aenter": enter_async_with,
    "exc_info": sys.exc_info,
    "ops": operator,
    "NameError": NameError,
    "unbound_local": unbound_local,
}

HELPER_CELLS: dict[str, types.CellType] = {
    helper: types.CellType(value) for helper, value in BLOCK_HELPERS.items()
}
