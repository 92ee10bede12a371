"""Compiled functions, cached by code object and found again by key.

A frame saves its function as ``module:qualname`` plus a fingerprint; loading
finds the function again here (importing its module if this process has not
compiled it yet) and refuses it if its code has changed since.

Which awaited coroutines become frames: those of *user code*, meaning any
file outside the standard library and installed packages, plus installed
packages that contain a function passed to ``make_durable``. Everything else
(asyncio, HTTP clients, database drivers) is awaited inline.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sysconfig
import types
from typing import Any

from ..errors import IncompatibleStateError
from ..runtime.code import CompiledFunction
from .pipeline import compile_code

# By identity: equal code objects (same source in two modules) are different functions.
# The code object is kept in the value so its id is never reused while cached.
_by_code: dict[int, tuple[types.CodeType, CompiledFunction | None]] = {}
_by_key: dict[str, CompiledFunction] = {}
# Code defined inside compiled blocks -> (code, the function it is defined in, its index there).
_nested: dict[int, tuple[types.CodeType, CompiledFunction, int]] = {}
_durable_packages: set[str] = set()

_INSTALL_PATHS = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
_OWN_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_LIBRARY_DIRS = tuple(os.path.realpath(p) + os.sep for p in (*_INSTALL_PATHS, _OWN_PACKAGE) if p)


def compiled(code: types.CodeType, globals_: dict[str, Any]) -> CompiledFunction:
    """The compiled form of ``code`` (compiling it the first time)."""
    cached = _by_code.get(id(code))
    if cached is not None and cached[1] is not None:
        return cached[1]
    function = compile_code(code, globals_, nested=id(code) in _nested)
    _by_code[id(code)] = (code, function)
    _by_key[function.key] = function
    for index, inner in enumerate(function.nested_codes):
        _nested[id(inner)] = (inner, function, index)
    _compile_awaited(function)
    return function


def code_reference(code: types.CodeType) -> tuple[str, str, int] | None:
    """How to find ``code`` again if it was defined in durable code: by its function and place.

    Saved closures refer to their code this way instead of carrying bytecode, so a restored
    closure runs the code of the running version (and is the very same code object).
    """
    entry = _nested.get(id(code))
    if entry is None:
        return None
    _, function, index = entry
    return (function.key, function.fingerprint, index)


def nested_code(key: str, fingerprint: str, index: int) -> types.CodeType:
    return resolve(key, fingerprint).nested_codes[index]


def _compile_awaited(function: CompiledFunction) -> None:
    """Compile the user functions ``function`` awaits by name now, so their errors come early."""
    for name in sorted(function.awaited_names):
        target = function.globals.get(name)
        code = getattr(target, "__code__", None)
        if isinstance(target, types.FunctionType) and code.co_flags & inspect.CO_COROUTINE:
            for_awaited(code, target.__globals__)


def mark_durable_package(module_name: str) -> None:
    """Treat the package ``module_name`` belongs to as user code, wherever it is installed."""
    _durable_packages.add(module_name.partition(".")[0])


def for_awaited(code: types.CodeType, globals_: dict[str, Any]) -> CompiledFunction | None:
    """The compiled function for an awaited coroutine's code, or None to await it inline."""
    cached = _by_code.get(id(code))
    if cached is not None:
        return cached[1]
    if not _is_user_code(code, globals_):
        _by_code[id(code)] = (code, None)
        return None
    return compiled(code, globals_)


def resolve(key: str, fingerprint: str) -> CompiledFunction:
    """The function a saved closure's code refers to, as long as its code is the one it was
    saved with (its nested code is found by its place in the function: no moving it)."""
    function = current(key)
    if fingerprint not in (function.fingerprint, function.source_fingerprint):
        raise IncompatibleStateError(
            f"the code of {function.qualname}() ({function.filename}) changed after this instance "
            "saved a function, lambda or class defined in it; the instance waits, intact, for a "
            "worker that has the code it was saved with.",
            function=function.qualname, code_changed=True,
        )
    return function


def current(key: str) -> CompiledFunction:
    """The function now defined under ``key``: looked up in its module when it can be."""
    module_name, _, qualname = key.partition(":")
    if "<locals>" in qualname:
        return _current_local(module_name, qualname)
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        raise IncompatibleStateError(
            f"saved state names the durable function {qualname}() in module {module_name}, "
            "which cannot be found; import or define it (and call make_durable on it if it is "
            "not a module-level function) before resuming",
            function=qualname, code_changed=True,
        ) from None
    target = getattr(target, "__func__", target)  # a classmethod or bound method
    while getattr(target, "__code__", None) is None or target.__code__.co_qualname != qualname:
        wrapped = getattr(target, "__wrapped__", None)  # decorators, DurableProgram
        if wrapped is None:
            raise IncompatibleStateError(
                f"{module_name}.{qualname} is no longer the async function this instance saved",
                function=qualname, code_changed=True,
            )
        target = wrapped
    return compiled(target.__code__, target.__globals__)


def _current_local(module_name: str, qualname: str) -> CompiledFunction:
    """A function defined inside another: inside durable code, found through the outer one."""
    outer_name = qualname.rpartition(".<locals>.")[0]
    try:
        outer = current(f"{module_name}:{outer_name}")
    except IncompatibleStateError:
        outer = None
    if outer is not None:
        for inner in outer.nested_codes:
            if inner.co_qualname == qualname and inner.co_flags & inspect.CO_COROUTINE:
                return compiled(inner, outer.globals)
    key = f"{module_name}:{qualname}"
    if key in _by_key:
        return _by_key[key]
    raise IncompatibleStateError(
        f"saved state names {qualname}(), a function defined inside another function; "
        "call make_durable on it in this process before resuming",
        function=qualname, code_changed=True,
    )


def _is_user_code(code: types.CodeType, globals_: dict[str, Any]) -> bool:
    filename = code.co_filename
    if filename.startswith("<") or not os.path.exists(filename):
        return False
    if globals_.get("__name__", "").partition(".")[0] in _durable_packages:
        return True
    return not os.path.realpath(filename).startswith(_LIBRARY_DIRS)
