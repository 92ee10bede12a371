"""Names compiled code blocks call, with CPython's own semantics and error messages.

Blocks reach these through closure cells named with the function's reserved
prefix, so a user's globals can never shadow them.
"""

from __future__ import annotations

import builtins
import operator
import sys
import types
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


def enter_with(manager: Any) -> tuple[Any, Any]:
    """Start a ``with`` block: return the bound ``__exit__`` and the value of ``__enter__()``."""
    enter = _lookup_special(manager, "__enter__")
    if enter is _MISSING:
        raise TypeError(
            f"'{type(manager).__name__}' object does not support the context manager protocol"
        )
    exit_ = _lookup_special(manager, "__exit__")
    if exit_ is _MISSING:
        raise TypeError(
            f"'{type(manager).__name__}' object does not support the context manager "
            "protocol (missed __exit__ method)"
        )
    return exit_, enter()


def enter_async_with(manager: Any) -> tuple[Any, Any]:
    """Start an ``async with`` block: the bound ``__aexit__`` and the awaitable of ``__aenter__()``."""
    enter = _lookup_special(manager, "__aenter__")
    if enter is _MISSING:
        raise TypeError(
            f"'{type(manager).__name__}' object does not support the asynchronous context "
            "manager protocol"
        )
    exit_ = _lookup_special(manager, "__aexit__")
    if exit_ is _MISSING:
        raise TypeError(
            f"'{type(manager).__name__}' object does not support the asynchronous context "
            "manager protocol (missed __aexit__ method)"
        )
    return exit_, enter()


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


# Every name a block may use, without the prefix.
BLOCK_HELPERS: dict[str, Any] = {
    "Thrown": Thrown,
    "Pause": PauseForEventException,
    "type": builtins.type,
    "isinstance": builtins.isinstance,
    "iter": builtins.iter,
    "next": builtins.next,
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
}

HELPER_CELLS: dict[str, types.CellType] = {
    helper: types.CellType(value) for helper, value in BLOCK_HELPERS.items()
}
