"""Turning an awaited object into a frame: what makes a call durable."""

from __future__ import annotations

import types
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any

from .code import CompiledFunction
from .frame import FunctionCall

if TYPE_CHECKING:
    from ..backends import OrchestrationBackend
    from ..program import DurableProgram


class DurableCall:
    """What calling a ``DurableProgram`` returns.

    Awaited in durable code (with no backend given) it becomes a frame of the
    running instance; awaited anywhere else it runs an instance of its own.
    """

    __slots__ = ("args", "backend", "instance_id", "kwargs", "program")

    def __init__(self, program: DurableProgram, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                 backend: OrchestrationBackend | None, instance_id: str | None) -> None:
        self.program = program
        self.args = args
        self.kwargs = kwargs
        self.backend = backend
        self.instance_id = instance_id

    def __await__(self) -> Generator[Any, None, Any]:
        from ..backends import DurableBackend
        from .runtime import DurableRuntime

        runtime = DurableRuntime(self.program, self.backend or DurableBackend(), self.instance_id)
        return runtime.run(*self.args, **self.kwargs).__await__()


def bind(function: CompiledFunction, callable_: Callable[..., Any], args: tuple[Any, ...],
         kwargs: Mapping[str, Any]) -> FunctionCall:
    """A new frame with arguments bound exactly as Python binds them (defaults, errors and all)."""
    coroutine = callable_(*args, **kwargs)
    try:
        arguments = coroutine.cr_frame.f_locals
    finally:
        coroutine.close()
    return FunctionCall(function, arguments)


def frame_for(awaitable: Any) -> FunctionCall | None:
    """A frame for an awaited call of user code, or None when it is awaited inline."""
    kind = awaitable.__class__
    if kind is types.CoroutineType:
        frame = awaitable.cr_frame
        if frame is None or awaitable.cr_running or awaitable.cr_suspended:
            return None  # already started: only Python itself can continue it
        from ..compiler.registry import for_awaited

        function = for_awaited(awaitable.cr_code, frame.f_globals)
        if function is None:
            return None
        arguments = frame.f_locals
        awaitable.close()
        return FunctionCall(function, arguments)
    if kind is DurableCall and awaitable.backend is None and awaitable.instance_id is None:
        return awaitable.program.new_frame(awaitable.args, awaitable.kwargs)
    return None
