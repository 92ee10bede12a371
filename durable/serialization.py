"""Pickling of program state.

The standard C pickler is tried first (fast, and it stores importable
functions and classes by reference, so they stay the same objects after a
restart); what it cannot handle (lambdas, closures, cells, classes defined in
functions) goes through cloudpickle. Exceptions are rebuilt even when their
``__init__`` would refuse their own ``args``, and keep their cause and
context. The pickler's memo tells which mutable objects a blob contains, so
the call stack can keep frames that share objects in one blob.
"""

from __future__ import annotations

import gc
import importlib
import io
import pickle
import sys
import types
from typing import Any

import cloudpickle

PROTOCOL = 5

_IMMUTABLE = (
    str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range, slice,
    type, types.FunctionType, types.BuiltinFunctionType, types.CodeType, types.ModuleType,
)


def _reduce_exception(error: BaseException) -> tuple[Any, ...]:
    state = dict(getattr(error, "__dict__", {}))
    links = (error.__cause__, error.__context__, error.__suppress_context__)
    return (_rebuild_exception, (type(error), _init_args(error), state, links))


def _init_args(error: BaseException) -> tuple[Any, ...]:
    """What to call the error's class with: the arguments its own ``__reduce__`` gives, when
    its class defines one in Python (the library's errors do: their ``args`` hold the message
    built from them, and ``Cancelled(message)`` would nest that message in a new one), else
    its ``args``, as pickle does."""
    if isinstance(type(error).__reduce__, types.FunctionType):
        try:
            make, args = error.__reduce__()[:2]
        except Exception:  # a __reduce__ that fails here: the plain way still rebuilds it
            return error.args
        if make is type(error):
            return tuple(args)
    return error.args


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any],
                       links: tuple[Any, Any, bool]) -> BaseException:
    try:
        error = cls(*args)
    except Exception:  # an __init__ with other parameters than its args: skip it
        error = cls.__new__(cls, *args)
    if state:
        error.__dict__.update(state)
    error.__cause__, error.__context__, error.__suppress_context__ = links
    return error


# Iterators over dicts and sets: CPython pickles them as a list of the remaining items,
# which loses their link to the container (a value updated later would come out stale,
# and changing the container's size would no longer raise).
_DICT_ITERATORS = {
    type(iter({})): ("keys", False),
    type(iter({}.values())): ("values", False),
    type(iter({}.items())): ("items", False),
    type(reversed({})): ("keys", True),
    type(reversed({}.values())): ("values", True),
    type(reversed({}.items())): ("items", True),
}
_SET_ITERATOR = type(iter(set()))


def _reduce_dict_iterator(iterator: Any) -> tuple[Any, ...]:
    container = next((r for r in gc.get_referents(iterator) if isinstance(r, dict)), None)
    if container is None:
        return (iter, ((),))  # exhausted
    try:
        iterator.__reduce__()  # iterates a copy: raises if the dict changed size meanwhile
    except RuntimeError as error:
        return (BrokenIterator, (str(error),))
    view, backwards = _DICT_ITERATORS[type(iterator)]
    return (_dict_iterator, (container, view, backwards, len(container) - iterator.__length_hint__()))


def _dict_iterator(container: dict[Any, Any], view: str, backwards: bool, done: int) -> Any:
    """A real iterator over the (restored) dict, advanced to where the saved one stood."""
    source = container if view == "keys" else getattr(container, view)()
    iterator = reversed(source) if backwards else iter(source)
    for _ in range(done):
        next(iterator)
    return iterator


def _reduce_set_iterator(iterator: Any) -> tuple[Any, ...]:
    container = next((r for r in gc.get_referents(iterator) if isinstance(r, set | frozenset)), None)
    if container is None:
        return (iter, ((),))
    try:
        _, (remaining,) = iterator.__reduce__()
    except RuntimeError as error:
        return (BrokenIterator, (str(error),))
    # A rebuilt set may order its items differently: keep the items, check the size.
    return (SetIterator, (container, remaining, len(container)))


class SetIterator:
    """A set iterator restored from saved state: the items it had left, and CPython's size check."""

    def __init__(self, container: set[Any] | frozenset[Any], remaining: list[Any], size: int) -> None:
        self._container = container
        self._remaining = remaining
        self._size = size

    def __iter__(self) -> SetIterator:
        return self

    def __next__(self) -> Any:
        if len(self._container) != self._size:
            self._size = -1
            raise RuntimeError("Set changed size during iteration")
        if not self._remaining:
            raise StopIteration
        return self._remaining.pop(0)

    def __length_hint__(self) -> int:
        return len(self._remaining)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SetIterator, (self._container, list(self._remaining), self._size))


class BrokenIterator:
    """An iterator whose container changed size before it was saved: it raises as it would have."""

    def __init__(self, message: str) -> None:
        self._message = message

    def __iter__(self) -> BrokenIterator:
        return self

    def __next__(self) -> Any:
        raise RuntimeError(self._message)


def _no_traceback() -> None:
    return None


def _reduce_special(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return _reduce_exception(obj)
    kind = type(obj)
    if kind is types.TracebackType:
        return (_no_traceback, ())  # its frames cannot outlive the process; exceptions drop it too
    if kind in _DICT_ITERATORS:
        return _reduce_dict_iterator(obj)
    if kind is _SET_ITERATOR:
        return _reduce_set_iterator(obj)
    return NotImplemented


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return _reduce_special(obj)


def _empty_cell() -> types.CellType:
    return types.CellType()


def _fill_cell(cell: types.CellType, state: tuple[Any, ...]) -> None:
    if state:
        cell.cell_contents = state[0]


def _reduce_cell(cell: types.CellType) -> tuple[Any, ...]:
    """A cell is created empty, memoized, then filled: shared cells stay shared, cycles close."""
    try:
        state: tuple[Any, ...] = (cell.cell_contents,)
    except ValueError:
        state = ()
    return (_empty_cell, (), state, None, None, _fill_cell)


class _CloudStatePickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CellType:
            return _reduce_cell(obj)
        if type(obj) is types.CodeType:
            from .compiler.registry import code_reference, nested_code

            reference = code_reference(obj)
            if reference is not None:
                return (nested_code, reference)
        reduced = _reduce_special(obj)
        return super().reducer_override(obj) if reduced is NotImplemented else reduced

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        make, newargs, state, items, dict_items, setter = super()._dynamic_function_reduce(func)
        code, base_globals, name, defaults, closure = newargs
        # cloudpickle gives a function fresh cells; a closure must keep the frame's own cells,
        # or a variable written after a restart would no longer be the one the closure reads.
        if func.__closure__ is not None:
            closure = func.__closure__
            state[1]["__closure__"] = None
        # And a copy of its module's globals: it must read the module's own, as they are then.
        module = _module_of(func.__globals__)
        if module is not None:
            base_globals = _ModuleNamespace(module)
            state[1]["__globals__"] = {}
        return make, (code, base_globals, name, defaults, closure), state, items, dict_items, setter


def _module_of(namespace: dict[str, Any]) -> str | None:
    """The name of the importable module whose namespace this is, if it is one."""
    name = namespace.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    return name if module is not None and vars(module) is namespace else None


class _ModuleNamespace:
    """Pickles as a reference to a module's globals, resolved by importing it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (_namespace_of, (self.name,))


def _namespace_of(name: str) -> dict[str, Any]:
    return vars(importlib.import_module(name))


class Pickled:
    """A blob and the mutable objects in it (by id), read from the (un)pickler's memo.

    The objects are kept alive with the blob, so an id in it can never come to mean
    another object (temporary dicts made for pickling are freed and their addresses reused).
    """

    __slots__ = ("_alive", "_mutable", "_worker", "blob")

    def __init__(self, blob: bytes, worker: pickle.Pickler | pickle.Unpickler) -> None:
        self.blob = blob
        self._worker: pickle.Pickler | pickle.Unpickler | None = worker
        self._mutable: frozenset[int] | None = None
        self._alive: list[Any] = []

    @property
    def mutable_ids(self) -> frozenset[int]:
        if self._mutable is None:
            worker = self._worker
            assert worker is not None, "compared after its pickler was reused without freeze()"
            entries = worker.memo.copy().values()
            objects = [e[1] for e in entries] if isinstance(worker, pickle.Pickler) else list(entries)
            self._alive = [obj for obj in objects if not isinstance(obj, _IMMUTABLE)]
            self._mutable = frozenset(map(id, self._alive))
            self._worker = None
        return self._mutable

    def freeze(self) -> None:
        """Read the memo now, before the pickler that wrote this blob is reused."""
        _ = self.mutable_ids

    def forget_memo(self) -> None:
        """The pickler is being reused and nobody froze this blob: it will not be compared."""
        if self._mutable is None:
            self._worker = None

    def shares_with(self, other: Pickled) -> bool:
        small, large = sorted((self.mutable_ids, other.mutable_ids), key=len)
        return not small.isdisjoint(large)


class StatePickler:
    """Pickles blob after blob with one reused pickler (making one costs more than a small dump).

    Reusing it clears the memo of the previous blob: call ``freeze()`` on a blob first if
    its shared objects will be needed later.
    """

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler = _StatePickler(self._buffer, PROTOCOL)
        self._last: Pickled | None = None

    def dump(self, obj: Any) -> Pickled:
        """Pickle ``obj``; raises the pickler's error if neither pickler can."""
        if self._last is not None:
            self._last.forget_memo()
            self._last = None
        buffer, pickler = self._buffer, self._pickler
        buffer.seek(0)
        buffer.truncate()
        pickler.clear_memo()
        try:
            pickler.dump(obj)
        except Exception:
            return _dump_with_cloudpickle(obj)
        self._last = Pickled(buffer.getvalue(), pickler)
        return self._last


def _dump_with_cloudpickle(obj: Any) -> Pickled:
    buffer = io.BytesIO()
    pickler = _CloudStatePickler(buffer, PROTOCOL)
    pickler.dump(obj)
    return Pickled(buffer.getvalue(), pickler)


def dump(obj: Any) -> Pickled:
    """Pickle ``obj`` once; raises the pickler's error if neither pickler can."""
    return StatePickler().dump(obj)


def dumps(obj: Any) -> bytes:
    return dump(obj).blob


def load(blob: bytes) -> tuple[Any, Pickled]:
    """Unpickle ``blob``; also return it as ``Pickled`` (with the loaded objects as its memo)."""
    unpickler = pickle.Unpickler(io.BytesIO(blob))
    obj = unpickler.load()
    return obj, Pickled(blob, unpickler)


def loads(blob: bytes) -> Any:
    return pickle.loads(blob)


def why_unpicklable(value: Any) -> BaseException | None:
    """The error pickling ``value`` alone raises, or None if it pickles."""
    try:
        dump(value)
    except Exception as error:
        return error
    return None
