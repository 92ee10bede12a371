"""Turning an awaited object into a frame: what makes a call durable."""

from __future__ import annotations

import functools
import gc
import types
from collections.abc import Callable, Mapping
from typing import Any

from .code import CompiledFunction
from .frame import FunctionCall


def bind(function: CompiledFunction, fn: types.FunctionType, args: tuple[Any, ...],
         kwargs: Mapping[str, Any]) -> FunctionCall:
    """A new frame with arguments bound exactly as Python binds them (defaults, errors and all)."""
    coroutine = fn(*args, **kwargs)
    try:
        arguments = coroutine.cr_frame.f_locals
    finally:
        coroutine.close()
    return FunctionCall(function, arguments, shared=_closure(fn))


def frame_for(awaitable: Any) -> FunctionCall | None:
    """A frame for an awaited call of user code, or None when it is awaited inline."""
    if awaitable.__class__ is not types.CoroutineType:
        return None
    frame = awaitable.cr_frame
    if frame is None or awaitable.cr_running or awaitable.cr_suspended:
        return None  # already started: only Python itself can continue it
    code = awaitable.cr_code
    if code is _program_call():
        arguments = frame.f_locals
        if arguments["orchestration_backend"] is not None or arguments["instance_id"] is not None:
            return None  # another instance: it runs on its own
        awaitable.close()
        return arguments["self"].new_frame(arguments["args"], arguments["kwargs"])
    try:
        function = _for_awaited()(code, frame.f_globals)
    except BaseException:
        awaitable.close()  # a compile error: the coroutine will never run
        raise
    if function is None:
        return None
    arguments = frame.f_locals
    shared = _closure(_function_of(awaitable)) if code.co_freevars else None
    awaitable.close()
    return FunctionCall(function, arguments, shared=shared)


def _function_of(coroutine: types.CoroutineType) -> types.FunctionType:
    """The function a coroutine was created from (CPython's frame refers to it)."""
    for referent in gc.get_referents(coroutine):
        if type(referent) is types.FunctionType and referent.__code__ is coroutine.cr_code:
            return referent
    raise RuntimeError(f"cannot find the function of {coroutine!r}")  # pragma: no cover


def _closure(fn: types.FunctionType) -> dict[str, types.CellType] | None:
    """A closure's cells by name: its frame shares them, so writes reach the enclosing scope."""
    if not fn.__closure__:
        return None
    return dict(zip(fn.__code__.co_freevars, fn.__closure__, strict=True))


@functools.cache
def _program_call() -> types.CodeType:
    """The code of ``DurableProgram.__call__`` (imported late: program imports this module)."""
    from ..program import DurableProgram

    return DurableProgram.__call__.__code__


@functools.cache
def _for_awaited() -> Callable[[types.CodeType, dict[str, Any]], CompiledFunction | None]:
    """The compiler's entry for awaited code (imported late: the compiler imports the runtime)."""
    from ..compiler.registry import for_awaited

    return for_awaited
