"""make_durable and DurableProgram: the entry points."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from .backends import DurableBackend, OrchestrationBackend
from .compiler import registry
from .runtime.calls import bind
from .runtime.frame import FunctionCall
from .runtime.runtime import DurableRuntime


class DurableProgram:
    """A compiled durable function. Call it like the function, plus where and as which instance::

        await prog(*args, orchestration_backend=backend, instance_id="order-42", **kwargs)

    Calling it again with the same instance id continues that instance (the
    arguments are then ignored); a finished instance returns its result (or
    raises its error) again without running anything.
    """

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, Any]], *, migrate: bool = True,
                 redact: Iterable[str] = ()) -> None:
        _require_coroutine_function(fn)
        self.fn = fn
        self.migrate = migrate
        self.redact = tuple(redact)
        self.__wrapped__ = fn
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        registry.mark_durable_package(fn.__module__ or "__main__")
        self.function = registry.compiled(fn.__code__, fn.__globals__)

    @property
    def key(self) -> str:
        return self.function.key

    @property
    def qualname(self) -> str:
        return self.function.qualname

    async def __call__(self, *args: Any, orchestration_backend: OrchestrationBackend | None = None,
                       instance_id: str | None = None, **kwargs: Any) -> Any:
        """Run or resume an instance. Awaited inside durable code with neither option given,
        the call becomes a frame of the running instance instead."""
        backend = orchestration_backend if orchestration_backend is not None else DurableBackend()
        return await DurableRuntime(self, backend, instance_id).run(*args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    def new_frame(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> FunctionCall:
        return bind(self.function, self.fn, args, kwargs)

    def __repr__(self) -> str:
        return f"<DurableProgram {self.key}>"


def make_durable(fn: Callable[..., Coroutine[Any, Any, Any]], *, migrate: bool = True,
                 redact: Iterable[str] = ()) -> DurableProgram:
    """Compile ``fn`` (an ``async def``) into a durable program; errors name construct and line.

    ``migrate``: when the code of a function on a paused instance's stack changes, move the
    instance onto the new code where that is sound (the default), or (False) run it only on the
    exact code it was saved with: pinned, it waits for a worker that has that code.
    ``redact``: variable names (or name parts) shown as ``***`` in its summaries, beside the
    default list (``durable.runtime.summary.REDACTED``)."""
    if isinstance(fn, DurableProgram):
        if fn.migrate != migrate or fn.redact != tuple(redact):
            raise ValueError(f"{fn.qualname} is already durable with migrate={fn.migrate}, "
                             f"redact={fn.redact}")
        return fn
    return DurableProgram(fn, migrate=migrate, redact=redact)


def _require_coroutine_function(fn: Any) -> None:
    """Async generators pass: compiling them fails naming their `yield` and its line."""
    where = getattr(fn, "__qualname__", repr(fn))
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    if not is_async or not isinstance(fn, types.FunctionType):
        raise TypeError(f"make_durable() needs an `async def` function, got {where} ({type(fn).__name__})")
