"""Hand-written programs, one per feature, run plainly and durably (restarted after every save)."""

from __future__ import annotations

import pytest
from harness import compare

CASES: dict[str, str] = {}


def case(name: str, source: str) -> None:
    assert name not in CASES
    CASES[name] = source


# --- straight line, calls, returns ------------------------------------------------------------
case("straight", """
async def main():
    a = 1
    log("start")
    b = await nd(a + 1)
    PAUSE("go")
    c = await helper(b)
    return a + b + c

async def helper(x):
    log("helper", x)
    y = await nd(x * 2)
    return y + 1
""")

case("no_suspension", """
async def main():
    total = 0
    for i in range(10):
        if i % 2:
            continue
        total += i
    else:
        log("done")
    return total
""")

case("recursion", """
async def fib(n):
    if n < 2:
        PAUSE("leaf")
        return n
    return await fib(n - 1) + await fib(n - 2)

async def main():
    return await fib(6)
""")

# --- loops ------------------------------------------------------------------------------------
case("for_list", """
async def main():
    out = []
    for x in [1, 2, 3]:
        out.append(await nd(x))
        PAUSE("tick")
    return out
""")

case("for_iterables", """
async def main():
    d = {"a": 1, "b": 2}
    out = []
    for k in d:
        out.append(await nd(k))
    for k, v in d.items():
        out.append((k, await nd(v)))
    for i, ch in enumerate("xy"):
        out.append((i, await nd(ch)))
    for a, b in zip(range(3), "pqr"):
        out.append(await nd((a, b)))
    for v in d.values():
        out.append(await nd(v))
    for r in reversed([5, 6]):
        out.append(await nd(r))
    return out
""")

case("for_user_iterable", """
class Countdown:
    def __init__(self, n):
        self.n = n
    def __iter__(self):
        return self
    def __next__(self):
        if self.n == 0:
            raise StopIteration
        self.n -= 1
        return self.n

async def main():
    out = []
    for x in Countdown(3):
        out.append(await nd(x))
    return out
""")

case("for_else_break", """
async def main():
    for x in range(5):
        if await nd(x) == 3:
            log("break", x)
            break
    else:
        log("no break")
    for x in range(2):
        await nd(x)
    else:
        log("else ran")
    return x
""")

case("while_else_continue", """
async def main():
    i = 0
    while i < 6:
        i += 1
        if i % 2 == 0:
            continue
        await nd(i)
        if i == 5:
            break
    else:
        log("while else")
    j = 0
    while await nd(j) < 3:
        j += 1
    else:
        log("exhausted", j)
    return i, j
""")

case("nested_loops", """
async def main():
    out = []
    for i in range(3):
        for j in range(3):
            if j == 2:
                break
            if i == 1:
                continue
            out.append(await nd((i, j)))
        else:
            log("inner else", i)
    return out
""")

case("mutate_while_iterating", """
async def main():
    xs = [1, 2]
    seen = []
    for x in xs:
        seen.append(await nd(x))
        if len(xs) < 4:
            xs.append(x + 10)
    return seen, xs
""")

case("container_iterators_keep_their_container", """
async def main():
    d = {"a": 1, "b": 2, "c": 3}
    out = []
    for k, v in d.items():
        out.append((k, v, await nd(k)))
        if k == "a":
            d["c"] = 30
    try:
        for k in d:
            await nd(k)
            d[k + k] = 0
    except RuntimeError as e:
        out.append(str(e))
    s = {1, 2, 3}
    try:
        for x in s:
            await nd(x)
            s.add(x + 10)
    except RuntimeError as e:
        out.append(str(e))
    for k in reversed(d):
        out.append(await nd(k))
    for v in d.values():
        out.append(await nd(v))
        d["a"] = -1
    return out
""")

case("annotations", """
async def main():
    counts: dict[str, int] = {}
    total: int
    counts["a"] = await nd(1)
    label: str = await nd("x")
    return counts, label
""")

# --- conditionals and match -------------------------------------------------------------------
case("if_elif_else", """
async def main():
    out = []
    for x in range(4):
        if await nd(x) == 0:
            out.append("zero")
        elif x == await nd(1):
            out.append("one")
            PAUSE("one")
        elif x == 2:
            out.append(await nd("two"))
        else:
            out.append("other")
    return out
""")

case("match_patterns", """
class Point:
    __match_args__ = ("x", "y")
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)

async def classify(value):
    match await nd(value):
        case 0 | 1:
            return "small"
        case [a, *rest] if await nd(len(rest)) > 1:
            return ("long", a, rest)
        case [a, b]:
            PAUSE("pair")
            return ("pair", a, b)
        case {"kind": kind, **others}:
            return ("mapping", kind, await nd(others))
        case Point(x=0, y=y):
            return ("on axis", y)
        case Point(x, y) as p if x == y:
            return ("diagonal", x, p.y)
        case str() as s:
            return ("string", await nd(s))
        case None:
            return "none"
        case _:
            return "other"

async def main():
    values = [0, 1, [1, 2, 3], [4, 5], {"kind": "k", "z": 1}, Point(0, 7), Point(3, 3),
              Point(1, 2), "s", None, 3.5]
    return [await classify(v) for v in values]
""")

# --- try / except / else / finally --------------------------------------------------------------
case("try_except_suspend_everywhere", """
async def risky(x):
    await nd(x)
    if x % 3 == 0:
        raise ValueError(x)
    if x % 3 == 1:
        raise KeyError(x)
    return x

async def main():
    out = []
    for x in range(6):
        try:
            out.append(await risky(x))
        except ValueError as e:
            out.append(("value", await nd(e.args[0])))
            PAUSE("handled")
        except (KeyError, TypeError) as e:
            out.append(("key", e.args))
        else:
            out.append(await nd("else"))
        finally:
            out.append(await nd("finally"))
    return out
""")

case("finally_return_break_continue", """
async def f(mode):
    for i in range(3):
        try:
            await nd(i)
            if mode == "return":
                return "returned"
            if mode == "break":
                break
            if mode == "continue":
                continue
            if mode == "raise":
                raise ValueError("boom")
        finally:
            log("finally", mode, i)
            await nd(i)
        log("after try", mode, i)
    return "end"

async def main():
    out = []
    for mode in ["return", "break", "continue", "raise", "none"]:
        try:
            out.append(await f(mode))
        except ValueError as e:
            out.append(("error", str(e)))
    return out
""")

case("finally_overrides", """
async def swallow():
    for _ in range(2):
        try:
            await nd(1)
            raise ValueError("lost")
        finally:
            await nd(2)
            break
    return "swallowed"

async def replace():
    try:
        try:
            await nd(1)
            raise ValueError("first")
        finally:
            await nd(2)
            raise KeyError("second")
    except KeyError as e:
        return (repr(e), repr(e.__context__))

async def override_return():
    try:
        await nd(1)
        return "try"
    finally:
        await nd(2)
        return "finally"

async def cont():
    out = []
    for i in range(3):
        try:
            await nd(i)
            raise ValueError(i)
        finally:
            out.append(i)
            continue
    return out

async def main():
    return [await swallow(), await replace(), await override_return(), await cont()]
""")

case("nested_finally_routing", """
async def f():
    out = []
    for i in range(3):
        try:
            try:
                if i == 1:
                    continue
                if i == 2:
                    break
                await nd(i)
            finally:
                out.append(("inner", i, await nd(i)))
        finally:
            out.append(("outer", i))
            PAUSE("outer")
    try:
        try:
            return out
        finally:
            out.append("inner-return")
    finally:
        out.append(await nd("outer-return"))

async def main():
    return await f()
""")

case("raise_from_and_bare_raise", """
import sys

async def inner():
    try:
        await nd(1)
        raise KeyError("k")
    except KeyError as e:
        await nd(2)
        log("exc_info", repr(sys.exc_info()[1]))
        raise ValueError("wrapped") from e

async def reraise():
    try:
        await nd(1)
        raise TypeError("t")
    except TypeError:
        await nd(2)
        raise

async def main():
    out = []
    try:
        await inner()
    except ValueError as e:
        out.append((repr(e), repr(e.__cause__), e.__suppress_context__))
    try:
        await reraise()
    except TypeError as e:
        out.append(repr(e))
    try:
        try:
            await nd(0)
            raise OSError("a")
        except OSError:
            await nd(1)
            raise RuntimeError("b")
    except RuntimeError as e:
        out.append((repr(e), repr(e.__context__)))
    return out
""")

case("callee_sees_callers_handled_exception", """
import sys

async def describe():
    log("callee sees", repr(sys.exc_info()[1]))
    await nd(0)
    log("still sees", repr(sys.exc_info()[1]))

async def reraise():
    await nd(1)
    raise

async def main():
    try:
        raise ValueError(1)
    except ValueError:
        await describe()
        try:
            await reraise()
        except ValueError as again:
            log("re-raised", repr(again))
    try:
        raise KeyError(2)
    except KeyError:
        await nd(repr(sys.exc_info()[1]))
    return "done"
""")

case("reassigned_from_itself_after_suspension", """
async def main():
    a = 1
    s = [1]
    await nd(0)
    a = a + 1
    s = s + [a]
    return a, s
""")

case("exception_crosses_frames", """
async def leaf(x):
    await nd(x)
    if x > 1:
        raise LookupError(f"too big {x}")
    return x

async def middle(x):
    try:
        return await leaf(x)
    finally:
        log("middle finally", x)

async def main():
    out = []
    for x in range(4):
        try:
            out.append(await middle(x))
        except LookupError as e:
            out.append(str(e))
    return out
""")

case("uncaught_error", """
class CustomError(Exception):
    def __init__(self, code, *, detail):
        super().__init__(code)
        self.detail = detail

async def main():
    await nd(1)
    PAUSE("before")
    raise CustomError(7, detail="x")
""")

case("handler_as_unbound", """
async def main():
    e = "before"
    try:
        await nd(1)
        raise ValueError("v")
    except ValueError as e:
        await nd(e.args)
    try:
        return e
    except NameError as err:
        return ("unbound", str(err).startswith("cannot access"))
""")

# --- with / async with ------------------------------------------------------------------------------
case("with_managers", """
class Manager:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress
    def __enter__(self):
        log("enter", self.name)
        return self.name.upper()
    def __exit__(self, kind, value, tb):
        log("exit", self.name, kind.__name__ if kind else None)
        return self.suppress

class AsyncManager:
    def __init__(self, name):
        self.name = name
    async def __aenter__(self):
        log("aenter", self.name)
        return await nd(self.name)
    async def __aexit__(self, kind, value, tb):
        await nd("aexit")
        log("aexit", self.name, kind.__name__ if kind else None)
        return False

async def main():
    out = []
    with Manager("a") as a, Manager("b") as b:
        out.append(await nd(a + b))
        PAUSE("inside")
    with Manager("s", suppress=True):
        await nd(1)
        raise ValueError("suppressed")
    async with AsyncManager("x") as x:
        out.append(await nd(x))
        PAUSE("inside async")
    try:
        async with AsyncManager("y"):
            await nd(2)
            raise KeyError("escapes")
    except KeyError:
        out.append("caught")
    for i in range(3):
        with Manager(f"loop{i}"):
            await nd(i)
            if i == 1:
                break
    return out
""")

case("async_with_two_managers_in_a_loop", """
class AM:
    async def __aenter__(self):
        return await nd(1)
    async def __aexit__(self, *exc):
        return False

async def main():
    out = []
    for x in [1, 2]:
        async with AM() as a, AM() as b:
            out.append(a + b + x)
    return out
""")

case("aexit_keeps_its_exception_info_across_awaits", """
import sys

class M:
    async def __aenter__(self):
        return self
    async def __aexit__(self, *exc):
        await nd("exit")
        log("exit", exc[0], type(exc[1]).__name__)
        return exc[0] is KeyError

async def main():
    async with M():
        raise KeyError(1)
    try:
        raise ValueError(2)
    except ValueError:
        info = sys.exc_info()
        await nd("handler")
        log("kept", info[0], info[1].args)
    return "suppressed"
""")

case("not_a_context_manager", """
class OnlyEnter:
    def __enter__(self):
        return self

async def main():
    out = []
    for manager in [3, OnlyEnter()]:
        try:
            with manager:
                await nd(1)
        except TypeError as e:
            out.append(str(e))
        try:
            async with manager:
                await nd(1)
        except TypeError as e:
            out.append(str(e))
    return out
""")

case("with_return_inside", """
class Manager:
    def __enter__(self):
        log("enter")
        return self
    def __exit__(self, *exc):
        log("exit", exc[0])
        return False

async def main():
    with Manager():
        await nd(1)
        return "from inside"
""")

# --- await inside expressions -----------------------------------------------------------------------
case("await_in_expressions", """
async def main():
    acc = [1]
    d = {"k": 5}
    out = []
    out.append(len(acc) + await grow(acc))
    out.append(max(await nd(3), await nd(4), 1))
    out.append(d[await nd("k")])
    out.append(f"{len(acc)}-{await grow(acc)}-{await nd('z')!r:>5}")
    out.append(await nd(1) if await nd(0) else await nd(2))
    out.append([await nd(i) for i in range(3)])
    out.append({k: await nd(v) for k, v in d.items()})
    out.append({await nd(i) % 2 for i in range(4)})
    out.append(await nd(await nd(9)))
    out.append((await nd(2)) ** (await nd(3)))
    out.append(-await nd(5))
    out.append(not await nd(False))
    out.append(acc[await nd(0)])
    out.append(str(await nd(1)).join(["a", "b"]))
    out.append([*acc, *(await nd([7, 8]))])
    out.append({**d, "x": await nd(1)})
    out.append(sorted(acc, key=lambda v: -v, reverse=await nd(False)))
    return out

async def grow(acc):
    acc.append(len(acc) + 1)
    return await nd(len(acc))
""")

case("short_circuit", """
async def main():
    out = []
    out.append(await nd(0) and await boom())
    out.append(await nd(1) or await boom())
    out.append(await nd(1) and await nd(2) and await nd(0) and await boom())
    out.append(1 < await nd(2) < await nd(3))
    out.append(5 < await nd(2) < await boom())
    out.append(await nd(None) if False else "else")
    out.append([x for x in range(5) if x % 2 or await nd(x) == 4])
    return out

async def boom():
    raise AssertionError("must not be evaluated")
""")

case("evaluation_order", """
class Loud:
    def __init__(self, name):
        self.name = name
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        log("getattr", self.name, attr)
        return lambda *a: log("call", self.name, attr, a)
    def __getitem__(self, key):
        log("getitem", self.name, key)
        return key
    def __setitem__(self, key, value):
        log("setitem", self.name, key, value)

async def v(x):
    log("await", x)
    return x

async def main():
    o = Loud("o")
    o.method(await v(1), await v(2))
    o[await v("k")] = await v("val")
    x = {"a": 1}
    x["a"] += await v(10)
    t = [0, 0]
    t[await v(0)] += await v(5)
    n = 1
    n += await v(n)
    return x, t, n
""")

case("assignment_targets", """
class Box:
    pass

async def main():
    a, (b, *rest) = await nd(1), await nd([2, 3, 4])
    box = Box()
    box.value = await nd("attr")
    items = [0, 0, 0]
    items[await nd(1)] = await nd("sub")
    items[0:2] = await nd(["s0", "s1"])
    count: int = await nd(5)
    count -= await nd(2)
    count *= 3
    first = second = await nd("same")
    if (w := await nd(42)) > 40:
        log("walrus", w)
    del items[await nd(0)]
    flags = {"x": 1}
    del flags["x"]
    return a, b, rest, box.value, items, count, first, second, w, flags
""")

case("assert_global_del", """
COUNTER = 0

async def bump():
    global COUNTER
    COUNTER += await nd(1)
    PAUSE("bumped")
    COUNTER += 1
    return COUNTER

async def main():
    x = await nd(1)
    assert x == 1, await nd("message")
    first = await bump()
    temp = await nd("temp")
    del temp
    try:
        assert await nd(0), await nd("failed assertion")
    except AssertionError as e:
        log("assert", e.args)
    return first, COUNTER
""")

# --- closures, lambdas, parameters ---------------------------------------------------------------------
case("closures_across_pause", """
async def main(base=10, *extra, scale=2, **named):
    k = base
    add = lambda x: x + k * scale
    def counter():
        nonlocal k
        k += 1
        return k
    class Holder:
        value = k
        def get(self):
            return k
    PAUSE("closure")
    first = add(1)
    counter()
    second = add(1)
    k = await nd(100)
    return first, second, add(0), counter(), Holder().get(), Holder.value, extra, named

async def entry():
    return await main(3, 4, 5, scale=3, flag=True)
""")

case("nested_async_functions", """
async def main():
    count = 0
    log_items = []
    async def bump(by):
        nonlocal count
        await nd(by)
        PAUSE("inside nested")
        count += by
        log_items.append(count)
        return count
    async def twice(x):
        return await bump(x) + await bump(x)
    first = await bump(1)
    both = await twice(2)
    return first, both, count, log_items
""")

case("closures_read_module_globals_as_they_are", """
G = 0

async def main():
    global G
    f = lambda y: y + G
    def g():
        return G * 2
    await nd(0)
    G = 5
    PAUSE("changed")
    return f(1), g(), G
""")

case("parameters", """
async def f(a, b=2, /, c=3, *args, d, e=5, **kw):
    await nd(a)
    PAUSE("params")
    return a, b, c, args, d, e, kw

async def main():
    return [await f(1, d=4), await f(1, 2, 3, 4, 5, d=6, e=7, z=8)]
""")

case("clashing_names", """
async def main():
    _d0_t1 = "user temp"
    _d0_V = "user V"
    iter = lambda x: "shadowed iter"
    next = "shadowed next"
    type = "shadowed type"
    out = []
    for item in [1, 2]:
        out.append(await nd(item))
    return _d0_t1, _d0_V, iter(0), next, type, out
""")

case("methods_and_super", """
class Base:
    async def describe(self, x):
        return ("base", await nd(x))

class Child(Base):
    def __init__(self):
        self.calls = 0
    async def describe(self, x):
        self.calls += 1
        PAUSE("method")
        inner = await super().describe(x)
        return ("child", inner, self.calls)

async def main():
    c = Child()
    return await c.describe(1), await c.describe(2)
""")

case("comprehension_scopes", """
async def main():
    x = "outer"
    ys = [await nd(x) for x in range(3)]
    pairs = [(i, j) for i in range(2) for j in [await nd(i)] if j >= 0]
    nested = [[await nd(a * b) for b in range(2)] for a in range(2)]
    lambdas = [lambda: i for i in [await nd(0), 1]]
    return x, ys, pairs, nested, [f() for f in lambdas]
""")

case("async_for", """
class Ticker:
    def __init__(self, n):
        self.n = n
    def __aiter__(self):
        return self
    async def __anext__(self):
        if self.n == 0:
            raise StopAsyncIteration
        self.n -= 1
        return await nd(self.n)

async def main():
    out = []
    async for x in Ticker(3):
        out.append(x)
        PAUSE("tick")
    else:
        out.append("else")
    out.append([y async for y in Ticker(2)])
    return out
""")

case("library_awaits", """
import asyncio

async def main():
    await asyncio.sleep(0)
    results = await asyncio.gather(nd(1), nd(2))
    value = await asyncio.wait_for(nd(3), timeout=5)
    return results, value
""")


@pytest.mark.parametrize("name", sorted(CASES))
async def test_durable_run_matches_plain_run(name: str, tmp_path) -> None:
    entry = "entry" if "async def entry" in CASES[name] else "main"
    await compare(CASES[name], tmp_path, entry=entry)


@pytest.mark.parametrize("name", sorted(CASES))
async def test_without_restarts(name: str, tmp_path) -> None:
    entry = "entry" if "async def entry" in CASES[name] else "main"
    await compare(CASES[name], tmp_path, entry=entry, crash=lambda n: False, save_every_await=False)
