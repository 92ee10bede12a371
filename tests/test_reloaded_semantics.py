"""Plain Python's meaning kept across a save and a load through a real store.

Each case is run plainly and durably; the durable run is saved at every
suspension point, dropped right after each save and continued by a fresh
runtime from a ``DiskStateStore`` or a ``SqliteStateStore`` (so every value
goes through the store's own encoding, as it would after a crash). The cases
are the deviations differential testing found in standard-library functions
rewritten into durable code (``functools.reduce``, ``operator.length_hint``,
``json.encoder._make_iterencode``), reduced.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import compare, load_module

from durable import (
    DiskStateStore,
    DurableBackend,
    SerializationError,
    SqliteStateStore,
    make_durable,
)
from durable.stores import StateStore

CASES: dict[str, str] = {}


def case(name: str, source: str) -> None:
    assert name not in CASES
    CASES[name] = source


def real_store(kind: str, directory: Path) -> StateStore:
    if kind == "disk":
        return DiskStateStore(directory / "state")
    return SqliteStateStore(directory / "state.db")


# --- closures and the cells of variables still unbound at the pause ---------------------------
case("closure_calls_function_defined_after_pause", """
async def main():
    def first():
        return later()
    PAUSE("p")
    def later():
        return "later"
    return first()
""")

case("closure_reads_value_assigned_after_pause", """
async def main():
    def read():
        return value
    PAUSE("p")
    value = await nd(5)
    return read()
""")

case("closure_returned_to_caller", """
async def make():
    def get():
        return value
    PAUSE("made")
    value = 7
    return get

async def main():
    get = await make()
    PAUSE("got")
    return get()
""")

# --- module globals come back as themselves ----------------------------------------------------
case("module_sentinel_default", """
_initial_missing = object()

async def reduce(function, sequence, initial=_initial_missing):
    it = iter(sequence)
    PAUSE("start")
    if initial is _initial_missing:
        try:
            value = next(it)
        except StopIteration:
            raise TypeError("reduce() of empty iterable with no initial value") from None
    else:
        value = initial
    for element in it:
        value = function(value, await nd(element))
    return value

async def main():
    return await reduce(lambda a, b: a + b, [1, 2, 3]), await reduce(max, [], 9)
""")

case("sentinel_in_fan_out_branches", """
import durable

_MISSING = object()
gather = durable.gather if DURABLE else asyncio.gather

async def branch(marker):
    PAUSE("b")
    return marker is _MISSING

async def main():
    return await gather(branch(_MISSING), branch(None))
""")

case("library_sentinel", """
import dataclasses

async def main():
    marker = dataclasses.MISSING
    field = dataclasses.field()
    PAUSE("p")
    return marker is dataclasses.MISSING, field.default is dataclasses.MISSING
""")

# --- C types without a name of their own ---------------------------------------------------------
case("hidden_c_type_and_its_method", """
async def length_hint(obj, default=0):
    kind = type(obj)
    hint = kind.__length_hint__
    PAUSE("p")
    return kind.__name__, hint(obj), isinstance(iter(range(9)), kind)

async def main():
    return await length_hint(iter(range(3)))
""")

# --- a bound method is fetched before the arguments are evaluated ------------------------------
case("bound_method_fetched_before_await", """
class Greeter:
    def greet(self, value):
        return ("original", value)

def other(value):
    return ("rebound", value)

async def rebind(greeter):
    PAUSE("rebind")
    greeter.greet = other
    return 1

async def main():
    g = Greeter()
    return g.greet(await rebind(g))
""")

# --- unbound locals --------------------------------------------------------------------------------
case("read_after_del", """
async def main():
    x = await nd(1)
    del x
    PAUSE("p")
    return x
""")

case("read_after_del_caught", """
async def main():
    x = 1
    del x
    try:
        await nd(0)
        return x
    except UnboundLocalError as error:
        return "caught", str(error)
""")

case("delete_unbound", """
async def main():
    if await nd(False):
        y = 1
    del y
""")

case("read_after_del_in_try_without_await", """
async def main():
    x = await nd(1)
    del x
    try:
        return x
    except UnboundLocalError as error:
        return "caught", type(error).__name__, str(error), error.__context__
""")

case("read_after_del_in_with_without_await", """
import contextlib

async def main():
    x = await nd(1)
    del x
    with contextlib.suppress(UnboundLocalError):
        print(x)
        return "not suppressed"
    return "suppressed"
""")

case("read_after_del_in_except_star", """
async def main():
    x = await nd(1)
    del x
    try:
        x += 1
    except* UnboundLocalError as group:
        caught = [type(e).__name__ for e in group.exceptions]
    return caught
""")

case("unbound_in_native_loop_caught_each_time", """
async def main():
    seen = []
    for i in range(await nd(3)):
        try:
            if i % 2:
                value = i
            seen.append(value)
            del value
        except UnboundLocalError as error:
            seen.append((i, type(error).__name__, error.__context__))
    return seen
""")

case("unbound_while_handling_keeps_context", """
async def main():
    y = await nd(1)
    del y
    try:
        raise KeyError("k")
    except KeyError:
        try:
            y
        except UnboundLocalError as error:
            return repr(error.__context__), error.__suppress_context__, error.__cause__
""")

case("nested_native_trys_convert_once", """
async def main():
    z = await nd(1)
    del z
    try:
        try:
            z
        except ValueError:
            return "wrong handler"
        finally:
            cleaned = True
    except UnboundLocalError as error:
        return type(error).__name__, repr(error.__context__), cleaned
""")

case("enclosing_free_variable_in_try_stays_name_error", """
async def main():
    def read():
        return w
    await nd(0)
    try:
        read()
    except UnboundLocalError:
        return "unbound local"
    except NameError as error:
        return type(error).__name__, str(error)
    w = 1
""")

case("closure_free_variable_stays_name_error", """
async def main():
    def read():
        return z
    PAUSE("p")
    try:
        return read()
    finally:
        z = await nd(1)
""")


@pytest.mark.parametrize("store", ["disk", "sqlite"])
@pytest.mark.parametrize("name", sorted(CASES))
async def test_durable_run_matches_plain_run(name: str, store: str, tmp_path: Path) -> None:
    await compare(CASES[name], tmp_path, store=real_store(store, tmp_path))


NAMELESS_TYPE = """
async def main():
    kind = type(iter(int, 1))  # callable_iterator: no module has it under any name
    PAUSE("p")
    return kind.__name__
"""


@pytest.mark.parametrize("store", ["disk", "sqlite"])
async def test_c_type_without_a_name_is_refused_when_saved(store: str, tmp_path: Path) -> None:
    module = load_module(NAMELESS_TYPE, tmp_path, durable=True)
    states = real_store(store, tmp_path)
    with pytest.raises(SerializationError) as caught:
        await make_durable(module.main)(orchestration_backend=DurableBackend(states),
                                        instance_id="i")
    assert caught.value.variable == "kind"
    assert "callable_iterator" in str(caught.value)
    # Nothing half-written: the store keeps the state saved when the instance started, and
    # running it again refuses again (instead of saving a state no process could load).
    saved = await states.load("i")
    assert saved is not None and saved["status"] == "running"
    with pytest.raises(SerializationError):
        await make_durable(module.main)(orchestration_backend=DurableBackend(states),
                                        instance_id="i")
    assert (await states.load("i"))["frames"] == saved["frames"]
