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

import io
import pickle
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
    return (_rebuild_exception, (type(error), error.args, state, links))


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


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            return _reduce_exception(obj)
        return NotImplemented


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
        if isinstance(obj, BaseException):
            return _reduce_exception(obj)
        if type(obj) is types.CellType:
            return _reduce_cell(obj)
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        # cloudpickle gives a function fresh cells; a closure must keep the frame's own cells,
        # or a variable written after a restart would no longer be the one the closure reads.
        make, newargs, state, items, dict_items, setter = super()._dynamic_function_reduce(func)
        if func.__closure__ is not None:
            code, base_globals, name, defaults, _ = newargs
            newargs = (code, base_globals, name, defaults, func.__closure__)
            state[1]["__closure__"] = None
        return make, newargs, state, items, dict_items, setter


class Pickled:
    """A blob and the mutable objects in it (by id), read lazily from the (un)pickler's memo."""

    __slots__ = ("_mutable", "_worker", "blob")

    def __init__(self, blob: bytes, worker: pickle.Pickler | pickle.Unpickler) -> None:
        self.blob = blob
        self._worker = worker  # its memo keeps the objects alive, so their ids stay theirs
        self._mutable: frozenset[int] | None = None

    @property
    def mutable_ids(self) -> frozenset[int]:
        if self._mutable is None:
            entries = self._worker.memo.copy().values()
            objects = (e[1] for e in entries) if isinstance(self._worker, pickle.Pickler) else entries
            self._mutable = frozenset(id(obj) for obj in objects if not isinstance(obj, _IMMUTABLE))
        return self._mutable

    def shares_with(self, other: Pickled) -> bool:
        small, large = sorted((self.mutable_ids, other.mutable_ids), key=len)
        return not small.isdisjoint(large)


def dump(obj: Any) -> Pickled:
    """Pickle ``obj``; raises the pickler's error if neither pickler can."""
    buffer = io.BytesIO()
    pickler: pickle.Pickler = _StatePickler(buffer, PROTOCOL)
    try:
        pickler.dump(obj)
    except Exception:
        buffer = io.BytesIO()
        pickler = _CloudStatePickler(buffer, PROTOCOL)
        pickler.dump(obj)
    blob = buffer.getvalue()
    buffer.close()
    return Pickled(blob, pickler)


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
