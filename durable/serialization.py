"""Pickling of program state.

The standard C pickler is tried first (fast, and it stores importable
functions and classes by reference, so they stay the same objects after a
restart); what it cannot handle (lambdas, closures, classes defined in
functions) goes through cloudpickle. In program state, an object that is a
module's global (a sentinel such as ``dataclasses.MISSING``, a lambda or a
hidden C type bound to a module-level name) is also saved by reference and
comes back as that same object, so ``is`` keeps its meaning; a C type that has
no importable name is refused when saved rather than stranding the state.
Bound methods keep the function they were bound to (not the attribute's
value at load time). Exceptions are rebuilt even when their
``__init__`` would refuse their own ``args``, and keep their cause and
context. The pickler's memo tells which mutable objects a blob contains, so
the call stack can keep frames that share objects in one blob.
"""

from __future__ import annotations

import gc
import hashlib
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


def _reduce_traceback(tb: types.TracebackType) -> tuple[Any, ...]:
    return (_no_traceback, ())  # its frames cannot outlive the process; exceptions drop it too


def _empty_cell() -> types.CellType:
    return types.CellType()


def _fill_cell(cell: types.CellType, state: tuple[Any, ...]) -> None:
    if state:
        cell.cell_contents = state[0]


def _reduce_cell(cell: types.CellType) -> tuple[Any, ...]:
    """A cell is created empty, memoized, then filled: shared cells stay shared, cycles close,
    and a cell still unbound comes back unbound (and still shared)."""
    try:
        state: tuple[Any, ...] = (cell.cell_contents,)
    except ValueError:
        state = ()
    return (_empty_cell, (), state, None, None, _fill_cell)


def _bound_method(function: Any, instance: Any) -> types.MethodType:
    return types.MethodType(function, instance)


def _reduce_method(method: types.MethodType) -> tuple[Any, ...]:
    """The function and the instance, as CPython holds them, unless the attribute of that
    name is this very method now: pickle's own reduction fetches the attribute again by name
    when loaded, and an attribute rebound after the method was fetched gives another object."""
    function, instance = method.__func__, method.__self__
    name = getattr(function, "__name__", None)
    try:
        current = getattr(instance, name) if isinstance(name, str) else None
    except Exception:
        current = None
    if type(current) is types.MethodType and current.__func__ is function \
            and current.__self__ is instance:
        return (getattr, (instance, name))
    return (_bound_method, (function, instance))


# Reductions by exact type (one dict lookup per object).
_REDUCERS: dict[type, Any] = {
    types.TracebackType: _reduce_traceback,
    types.CellType: _reduce_cell,
    types.MethodType: _reduce_method,
    _SET_ITERATOR: _reduce_set_iterator,
    **dict.fromkeys(_DICT_ITERATORS, _reduce_dict_iterator),
}


def _reduce_special(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return _reduce_exception(obj)
    reducer = _REDUCERS.get(type(obj))
    return NotImplemented if reducer is None else reducer(obj)


# Values whose identity means nothing (equal ones are interchangeable, and small ints and
# strings are shared by every module), and the containers the C pickler never offers to
# ``reducer_override``: never saved by reference.
_VALUE_TYPES = frozenset({
    int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range, slice,
    list, dict, set, bytearray, types.ModuleType, types.CellType,
})
_NAMED_TYPES = (type, types.FunctionType, types.BuiltinFunctionType)
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class statement (or an extension's heap type)
_IMMUTABLETYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: set on extension types, never by Python


def _named_by_itself(obj: Any) -> bool:
    """Whether ``obj`` (a class or function) is found by its ``__module__`` and
    ``__qualname__``: pickle saves those by reference already. Read from the namespaces
    themselves, so no module or class ``__getattr__`` runs (nothing imported, nothing warned)."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    qualname = getattr(obj, "__qualname__", None)
    if module is None or not isinstance(qualname, str):
        return False
    found: Any = module
    for part in qualname.split("."):
        namespace = getattr(found, "__dict__", None)
        found = namespace.get(part) if namespace is not None and hasattr(namespace, "get") else None
        if found is None:
            return False
    return found is obj


class ModuleGlobals:
    """Which objects are globals of a loaded module, by id: ``id -> (module, name)``.

    Each module is indexed once, when first seen in ``sys.modules`` (a save checks only
    whether ``sys.modules`` grew), so a save pays one dict lookup per object. An entry is
    checked when used (the module still binds the name to that very object), so a global
    rebound since, or an id reused by another object, never gives a wrong reference; a
    stale entry has its module indexed again.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[str, str]] = {}  # never replaced: picklers hold it
        self._indexed: dict[str, types.ModuleType] = {}
        self._seen = 0

    def refresh(self) -> None:
        """Index the modules imported since the last call.

        ``__main__`` and modules made without an import (no ``__spec__``) are left out: the
        process that loads the state may not have them (a client's script passes a global
        of its own as an argument; a worker runs it).
        """
        if len(sys.modules) == self._seen:
            return
        for name, module in list(sys.modules.items()):
            if (self._indexed.get(name) is not module and isinstance(module, types.ModuleType)
                    and name != "__main__" and getattr(module, "__spec__", None) is not None):
                self._index(name, module)
        self._seen = len(sys.modules)

    def _index(self, name: str, module: types.ModuleType) -> None:
        self._indexed[name] = module
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            return
        by_id = self.by_id
        for attribute, value in list(namespace.items()):
            kind = type(value)
            named = issubclass(kind, _NAMED_TYPES)  # not isinstance: a proxy's __class__ may raise
            if kind in _VALUE_TYPES:
                continue
            if named and ((getattr(value, "__qualname__", None) == attribute  # defined here
                           and getattr(value, "__module__", None) == name) or _named_by_itself(value)):
                continue
            entry = by_id.get(id(value))
            # An object several modules import keeps the first one, unless this is its home.
            home = value.__module__ if named else kind.__module__
            if entry is None or home == name or self._bound(entry) is not value:
                by_id[id(value)] = (name, attribute)

    @staticmethod
    def _bound(entry: tuple[str, str]) -> Any:
        module = sys.modules.get(entry[0])
        namespace = getattr(module, "__dict__", None)
        return namespace.get(entry[1], _UNBOUND) if isinstance(namespace, dict) else _UNBOUND

    def reference(self, obj: Any) -> tuple[Any, ...] | None:
        """How to save ``obj`` by reference, if it is a module global."""
        entry = self.by_id.get(id(obj))
        if entry is None:
            return None
        if self._bound(entry) is obj:
            return (_module_global, entry)
        del self.by_id[id(obj)]  # stale: the module may have run again (a reload)
        module = sys.modules.get(entry[0])
        if isinstance(module, types.ModuleType):
            self._index(entry[0], module)
            if self.by_id.get(id(obj)) is not None and self._bound(self.by_id[id(obj)]) is obj:
                return (_module_global, self.by_id[id(obj)])
        return None


_UNBOUND = object()
MODULE_GLOBALS = ModuleGlobals()
# C types with no name of their own that cloudpickle finds in the ``types`` module.
_TYPES_MODULE = frozenset(value for value in vars(types).values() if isinstance(value, type))


def _module_global(module: str, name: str) -> Any:
    """A module global saved by reference (the module is imported if it was not)."""
    return getattr(importlib.import_module(module), name)


def _refuse_nameless_builtin_type(cls: type) -> None:
    """A C type that cannot be imported by any name can be neither found again nor rebuilt:
    refuse it when saving (cloudpickle would save a copy that can never be loaded)."""
    if cls.__flags__ & _HEAPTYPE and not cls.__flags__ & _IMMUTABLETYPE:
        return  # a Python class: cloudpickle rebuilds it by value when it has no name
    if cls in _TYPES_MODULE or _named_by_itself(cls):
        return
    raise pickle.PicklingError(
        f"the type {cls.__module__}.{cls.__qualname__} is built into Python or an extension "
        "and cannot be imported under its name (nor under any module global), so it could "
        "not be found again when loaded"
    )


class _GlobalReferences:
    """What both picklers share: with ``by_reference``, module globals are saved as references
    (program state only: values handed to other processes, such as event payloads, may come
    from a module the reader does not have, like a client's ``__main__``)."""

    def __init__(self, file: io.BytesIO, protocol: int, by_reference: bool) -> None:
        super().__init__(file, protocol)  # type: ignore[call-arg]
        # One dict lookup per object when on; an empty dict when off.
        self.global_ids: dict[int, tuple[str, str]] = MODULE_GLOBALS.by_id if by_reference else {}
        self.references: set[int] = set()  # ids of the objects saved by reference

    def reference(self, obj: Any) -> tuple[Any, ...] | None:
        reference = MODULE_GLOBALS.reference(obj)
        if reference is not None:
            self.references.add(id(obj))
        return reference


class _StatePickler(_GlobalReferences, pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if id(obj) in self.global_ids:
            reference = self.reference(obj)
            if reference is not None:
                return reference
        return _reduce_special(obj)


class _CloudStatePickler(_GlobalReferences, cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if id(obj) in self.global_ids:
            reference = self.reference(obj)
            if reference is not None:
                return reference
        if type(obj) is types.CodeType:
            from .compiler.registry import code_reference, nested_code

            reference = code_reference(obj)
            if reference is not None:
                return (nested_code, reference)
        reduced = _reduce_special(obj)
        if reduced is not NotImplemented:
            return reduced
        if issubclass(type(obj), type):
            _refuse_nameless_builtin_type(obj)
        return super().reducer_override(obj)

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
        """Objects saved by reference (module globals) are left out: they come back as the
        same object from any blob, so sharing them does not tie two blobs together."""
        if self._mutable is None:
            worker = self._worker
            assert worker is not None, "compared after its pickler was reused without freeze()"
            entries = worker.memo.copy().values()
            objects = [e[1] for e in entries] if isinstance(worker, pickle.Pickler) else list(entries)
            self._alive = [obj for obj in objects if not isinstance(obj, _IMMUTABLE)]
            references = getattr(worker, "references", None)
            if references:
                self._alive = [obj for obj in self._alive if id(obj) not in references]
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
    its shared objects will be needed later. Program state: module globals by reference.
    """

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler = _StatePickler(self._buffer, PROTOCOL, by_reference=True)
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
        pickler.references = set()
        MODULE_GLOBALS.refresh()
        try:
            pickler.dump(obj)
        except Exception:
            return _dump_with_cloudpickle(obj, by_reference=True)
        self._last = Pickled(buffer.getvalue(), pickler)
        return self._last


def _dump_with_cloudpickle(obj: Any, by_reference: bool) -> Pickled:
    buffer = io.BytesIO()
    pickler = _CloudStatePickler(buffer, PROTOCOL, by_reference)
    pickler.dump(obj)
    return Pickled(buffer.getvalue(), pickler)


def dump(obj: Any, *, state: bool = False) -> Pickled:
    """Pickle ``obj`` once; raises the pickler's error if neither pickler can.

    ``state``: it is program state (module globals saved by reference); otherwise a value
    another process may read (a result, an event payload), saved whole.
    """
    if state:
        return StatePickler().dump(obj)
    buffer = io.BytesIO()
    pickler = _StatePickler(buffer, PROTOCOL, by_reference=False)
    try:
        pickler.dump(obj)
    except Exception:
        return _dump_with_cloudpickle(obj, by_reference=False)
    return Pickled(buffer.getvalue(), pickler)


def dumps(obj: Any, *, state: bool = False) -> bytes:
    return dump(obj, state=state).blob


def load(blob: bytes) -> tuple[Any, Pickled]:
    """Unpickle ``blob``; also return it as ``Pickled`` (with the loaded objects as its memo)."""
    unpickler = pickle.Unpickler(io.BytesIO(blob))
    obj = unpickler.load()
    return obj, Pickled(blob, unpickler)


def loads(blob: bytes) -> Any:
    return pickle.loads(blob)


def why_unpicklable(value: Any) -> BaseException | None:
    """The error pickling ``value`` alone as program state raises, or None if it pickles."""
    try:
        dump(value, state=True)
    except Exception as error:
        return error
    return None


class _CanonicalPickler(pickle._Pickler):  # type: ignore[misc]
    """The pure-Python pickler with sets in a fixed order (by their items' own canonical
    pickles): a set of strings iterates in an order each process's hash seed decides."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_set(self, obj: set[Any] | frozenset[Any]) -> None:
        self.save_reduce(type(obj), (sorted(obj, key=_canonical_bytes),), obj=obj)

    dispatch[set] = _save_set
    dispatch[frozenset] = _save_set


def _canonical_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _CanonicalPickler(buffer, PROTOCOL).dump(obj)
    return buffer.getvalue()


def canonical_digest(obj: Any) -> str | None:
    """A digest of ``obj`` that every process computes alike for equal plain data (sets
    included), or None if it cannot be pickled that way (a lambda): what a start compares."""
    try:
        return hashlib.sha256(_canonical_bytes(obj)).hexdigest()
    except Exception:
        return None
