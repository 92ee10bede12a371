"""Random async programs for the differential test (``test_differential.py``).

``programs()`` is a hypothesis strategy that returns the source text of a
whole program, to be run after ``harness.PRELUDE`` (which gives ``log``,
``nd`` and ``TRACE``): module-level support classes (``SUPPORT``), functions
``f0..fN`` and an entry ``main()``. ``f_k`` may await ``f_j`` only for
``j > k`` (and itself, through a bounded ``depth`` parameter), so every call
tree is finite. Every loop body and every call burns one unit of ``FUEL``, a
module-level budget that survives restarts (the multi-process test carries
it over explicitly), so a wrong lowering that loops forever raises
``OutOfFuel`` and fails the comparison instead of hanging.

Suspension points -- ``await f_j(...)``, ``await box.add(...)`` (a durable
method), ``await nd(...)`` (a library-style coroutine), nested ``async def``
closures, ``async for``/async comprehensions over ``Ticker``, ``await (await
nd(Later(x)))``, ``async with`` and ``PAUSE("...")`` -- can appear in every
statement and expression slot of the grammar: loops of every kind with
``else``/``break``/``continue``, ``if``/``elif``, ``match`` with every pattern
kind and (awaiting) guards, ``try``/``except``/``else``/``finally`` with
``return``/``break``/``continue``/raises anywhere, ``with``, call arguments,
operators, subscripts, f-strings, conditional expressions, ``and``/``or``
(with logged operands), comprehensions, every assignment target, ``del``,
``assert``, ``global``, closures and lambdas (also ``nonlocal`` ones) used
across suspensions, every parameter kind, and locals named like the
compiler's internals.

Swarm testing: each program first draws a subset of ``FEATURES`` and uses
only those, so features that mask each other are also tried apart; every
feature draw shrinks towards "off".

Every value a program logs, raises or returns is plain data (ints, strings,
lists, dicts, tuples; ``Point`` and ``Later`` compare by class name and
value and have a stable repr), so outcomes compare by value, also across
processes. Sets are only ever reduced to ``len``/``sum``: their order is no
part of the semantics.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

FEATURES: tuple[str, ...] = (
    "calls", "nd", "pause", "if", "for", "while", "break_continue", "try", "raise",
    "with", "async_with", "match", "short_circuit", "comprehension", "fstring",
    "unpacking", "subscript", "attribute", "augassign", "walrus", "annotated", "del",
    "assert", "global", "closures", "recursion", "parameters", "clashing_names",
    "return", "exc_info", "acc_rebind", "conditional", "method", "async_for",
    "nested_async", "displays",
)

COMMON = frozenset({"calls", "nd", "pause", "if", "for", "try", "short_circuit"})

# Features a program run in several processes cannot use: module globals are not part
# of the durable state, so a fresh process starts them over (documented behaviour).
IN_PROCESS_ONLY = frozenset({"global"})

SUPPORT = '''\
import asyncio
import sys

FUEL = [{fuel}]
G = 0


class OutOfFuel(Exception):
    pass


def tick():
    FUEL[0] -= 1
    if FUEL[0] < 0:
        raise OutOfFuel("out of fuel")
    return True


class Countdown:
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return self

    def __next__(self):
        if self.n <= 0:
            raise StopIteration
        self.n -= 1
        return self.n


class Ticker:
    """An async iterator: `async for` and async comprehensions."""

    def __init__(self, n):
        self.n = n

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.n <= 0:
            raise StopAsyncIteration
        self.n -= 1
        return await nd(self.n)


class Later:
    """A saveable awaitable, returned by one await and awaited by the next."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):  # by name, like Point
        return type(other).__name__ == "Later" and self.value == other.value

    def __repr__(self):
        return f"Later({{self.value!r}})"

    def __await__(self):
        log("later", self.value)
        yield from asyncio.sleep(0).__await__()
        return self.value


class Point:
    __match_args__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):  # by name: the plain and the durable run have a Point class each
        return type(other).__name__ == "Point" and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({{self.x!r}}, {{self.y!r}})"


class Box:
    def __init__(self, v):
        self.v = v

    async def add(self, x):
        await nd(x)
        self.v += x
        return self.v


class Manager:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress

    def __enter__(self):
        log("enter", self.name)
        return self.name

    def __exit__(self, kind, value, tb):
        log("exit", self.name, kind.__name__ if kind else None)
        return self.suppress and kind is not None and issubclass(kind, ValueError)


class AsyncManager:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress

    async def __aenter__(self):
        log("aenter", self.name)
        return await nd(self.name)

    async def __aexit__(self, kind, value, tb):
        await nd("aexit")
        log("aexit", self.name, kind.__name__ if kind else None)
        return self.suppress and kind is not None and issubclass(kind, KeyError)
'''

# Local names that clash with the compiler's internal names and with builtins it uses.
CLASHING_NAMES = ("_d0_t1", "_d0_V", "iter", "next", "type", "_d1_L2", "_d0_b0", "Thrown")

EXCEPTIONS = ("ValueError", "KeyError", "IndexError", "ZeroDivisionError")
_CAPTURE = re.compile(r"\bm\d+\b")
_STATEMENT_START = re.compile(r"^(?!elif\b|else\b|except\b|finally\b|case\b|\s)")
HANDLED = ("ValueError", "KeyError", "IndexError", "ZeroDivisionError", "LookupError",
           "ArithmeticError", "(KeyError, ValueError)", "(IndexError, ZeroDivisionError)")


@dataclass(frozen=True)
class Signature:
    index: int
    positional: tuple[str, ...]  # int parameters before acc
    posonly: bool  # a `/` right after acc
    default: int | None  # `q=<default>` after acc
    star_args: bool
    kwonly_required: bool  # `r`
    kwonly_default: int | None  # `k=<default>`
    depth: bool  # `depth=0`, for bounded self-recursion
    star_kwargs: bool

    @property
    def name(self) -> str:
        return f"f{self.index}"

    def header(self) -> str:
        params = [*self.positional, "acc"]
        if self.posonly:
            params.append("/")
        if self.default is not None:
            params.append(f"q={self.default}")
        if self.star_args:
            params.append("*args")
        elif self.kwonly_required or self.kwonly_default is not None or self.depth:
            params.append("*")
        if self.kwonly_required:
            params.append("r")
        if self.kwonly_default is not None:
            params.append(f"k={self.kwonly_default}")
        if self.depth:
            params.append("depth=0")
        if self.star_kwargs:
            params.append("**kw")
        return f"async def {self.name}({', '.join(params)}):"

    def int_parameters(self) -> tuple[str, ...]:
        names = list(self.positional)
        if self.default is not None:
            names.append("q")
        if self.kwonly_required:
            names.append("r")
        if self.kwonly_default is not None:
            names.append("k")
        return tuple(names)


@dataclass(frozen=True)
class Ctx:
    """What the code being generated may use at this point."""

    sig: Signature | None  # None in main
    ints: tuple[str, ...]  # int-valued names that are surely bound here
    assignable: tuple[str, ...]  # function-level ints that may be assigned
    strs: tuple[str, ...] = ()
    callables: tuple[str, ...] = ()  # one-int-argument closures
    async_callables: tuple[str, ...] = ()  # one-int-argument nested async functions
    handler: str | None = None  # inside `except ... as <handler>`
    in_handler: bool = False  # a bare `raise` is valid here
    in_loop: bool = False
    can_await: bool = True
    walrus: bool = True
    fstring: bool = True
    nesting: int = 0


@dataclass
class _Builder:
    draw: Callable[..., object]
    features: frozenset[str]
    signatures: list[Signature] = field(default_factory=list)
    budget: int = 40
    names: itertools.count = field(default_factory=lambda: itertools.count(1))

    # --- drawing helpers ------------------------------------------------------------------
    def has(self, feature: str) -> bool:
        return feature in self.features

    def pick(self, options: list[str]) -> str:
        return self.draw(st.sampled_from(options))

    def number(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def coin(self) -> bool:
        return self.draw(st.booleans())

    def rarely(self, one_in: int = 4) -> bool:
        """True about once in ``one_in`` draws (False when shrunk)."""
        return self.number(0, one_in - 1) == one_in - 1

    def divisor(self) -> int:
        """Mostly 1..3; 0 (ZeroDivisionError) now and then."""
        return 0 if self.rarely(10) else self.number(1, 3)

    def key(self) -> str:
        """A key of ``dct``: "z" is missing at first (KeyError), now and then."""
        return "z" if self.rarely(5) else self.pick(["x", "y"])

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    # --- int expressions --------------------------------------------------------------------
    def expr(self, ctx: Ctx, depth: int = 2) -> str:
        options = ["lit", "var", "var"]
        if depth > 0:
            options += ["binop", "binop", "len_acc", "subscript", "builtin", "unary"]
            if ctx.can_await and self.has("nd"):
                options += ["nd"] * 5
            if ctx.can_await and self.has("calls") and self._callees(ctx):
                options += ["call", "call", "call", "len_plus_call", "len_plus_call"]
            if ctx.can_await and self.has("method"):
                options += ["method", "later"]
            if ctx.can_await and self.has("recursion") and ctx.sig is not None and ctx.sig.depth:
                options.append("recurse")
            if self.has("conditional"):
                options.append("conditional")
            if self.has("short_circuit"):
                options += ["and_or", "and_or"]
            if self.has("comprehension"):
                options.append("comprehension")
            if self.has("fstring") and ctx.fstring:
                options.append("fstring")
            if self.has("closures") and ctx.callables:
                options += ["closure_call", "closure_call"]
            if ctx.can_await and ctx.async_callables:
                options += ["async_closure_call", "async_closure_call"]
            if self.has("attribute"):
                options.append("attribute")
            if self.has("walrus") and ctx.walrus and ctx.assignable:
                options.append("walrus")
            if ctx.strs:
                options.append("len_str")
            if ctx.handler:
                options.append("handler_args")
            if ctx.sig is not None and (ctx.sig.star_args or ctx.sig.star_kwargs):
                options.append("star_params")
            if self.has("global"):
                options.append("global_read")
        kind = self.pick(options)
        return getattr(self, f"_e_{kind}")(ctx, depth - 1)

    def _e_lit(self, ctx: Ctx, depth: int) -> str:
        return str(self.number(0, 5))

    def _e_var(self, ctx: Ctx, depth: int) -> str:
        return self.pick(list(ctx.ints)) if ctx.ints else self._e_lit(ctx, depth)

    def _e_binop(self, ctx: Ctx, depth: int) -> str:
        op = self.pick(["+", "-", "*", "+", "-", "//", "%"])
        left = self.expr(ctx, depth)
        if op == "*":  # by a constant: bounded growth
            return f"({left} * {self.number(0, 3)})"
        if op in ("//", "%"):
            return f"({left} {op} {self.divisor()})"
        return f"({left} {op} {self.expr(ctx, depth)})"

    def _e_unary(self, ctx: Ctx, depth: int) -> str:
        return f"(-{self.expr(ctx, depth)})"

    def _e_len_acc(self, ctx: Ctx, depth: int) -> str:
        return "len(acc)"

    def _e_subscript(self, ctx: Ctx, depth: int) -> str:
        kind = self.pick(["lst_mod", "lst_lit", "dct_get", "dct_key", "acc"])
        if kind == "lst_mod":
            return f"lst[{self.expr(ctx, depth)} % len(lst)]"
        if kind == "lst_lit":  # may raise IndexError
            return f"lst[{self.number(-1, 3) if self.rarely() else self.number(-1, 0)}]"
        if kind == "dct_get":
            return f'dct.get("{self.key()}", {self.expr(ctx, depth)})'
        if kind == "dct_key":  # may raise KeyError
            return f'dct["{self.key()}"]'
        return f"(acc[{self.expr(ctx, depth)} % len(acc)] if acc else {self.expr(ctx, depth)})"

    def _e_builtin(self, ctx: Ctx, depth: int) -> str:
        kinds = ["max", "min", "abs", "int_cond"]
        if self.has("displays"):
            kinds += ["star_args", "keyword", "slice", "list_display", "dict_display",
                      "genexp", "method_on_result"]
        kind = self.pick(kinds)
        if kind == "abs":
            return f"abs({self.expr(ctx, depth)})"
        if kind == "int_cond":
            return f"int({self.cond(ctx, depth)})"
        if kind == "star_args":
            return f"max(*lst, {self.expr(ctx, depth)}, *[{self.expr(ctx, depth)}])"
        if kind == "keyword":  # lst is never empty
            return f"sorted(lst, key=lambda v: -v, reverse={self.cond(ctx, depth)})[0]"
        if kind == "slice":
            return f"sum(lst[{self.expr(ctx, depth)}:{self.expr(ctx, depth)}])"
        if kind == "list_display":
            return f"sum([*lst, {self.expr(ctx, depth)}, *acc])"
        if kind == "dict_display":
            return f'sum({{**dct, "{self.key()}": {self.expr(ctx, depth)}}}.values())'
        if kind == "genexp":  # a generator expression may not await: it runs natively
            var = self.fresh("i")
            inner = replace(ctx, ints=(*ctx.ints, var), can_await=False, walrus=False)
            return f"sum({self.expr(inner, depth)} for {var} in lst)"
        if kind == "method_on_result":
            value = "(await nd(lst))" if ctx.can_await and self.has("nd") else "lst"
            return f"{value}.count({self.expr(ctx, depth)})"
        return f"{kind}({self.expr(ctx, depth)}, {self.expr(ctx, depth)}, {self.number(0, 3)})"

    def _e_nd(self, ctx: Ctx, depth: int) -> str:
        return f"(await nd({self.expr(ctx, depth)}))"

    def _callees(self, ctx: Ctx) -> list[Signature]:
        start = 0 if ctx.sig is None else ctx.sig.index + 1
        return self.signatures[start:]

    def call(self, ctx: Ctx, depth: int, callee: Signature | None = None, recursive: bool = False) -> str:
        if callee is None:
            callee = self.draw(st.sampled_from(self._callees(ctx)))
        args = [self.expr(ctx, depth) for _ in callee.positional] + ["acc"]
        if callee.default is not None and self.coin():
            if callee.star_args or self.coin():
                args.append(self.expr(ctx, depth))
            else:
                args.append(f"q={self.expr(ctx, depth)}")
        if callee.star_args and "q=" not in args[-1]:
            args += [self.expr(ctx, depth) for _ in range(self.number(0, 2))]
            if self.has("displays") and self.coin():
                args.append(self.pick(["*lst", f"*[{self.expr(ctx, depth)}]"]))
        if callee.kwonly_required:
            args.append(f"r={self.expr(ctx, depth)}")
        if callee.kwonly_default is not None and self.coin():
            args.append(f"k={self.expr(ctx, depth)}")
        if callee.depth:
            args.append("depth=depth - 1" if recursive else f"depth={self.number(0, 2)}")
        if callee.star_kwargs and self.coin():
            if self.has("displays") and self.coin():
                args.append(f'**{{"z": {self.expr(ctx, depth)}}}')
            else:
                args.append(f"z={self.expr(ctx, depth)}")
        return f"await {callee.name}({', '.join(args)})"

    def _e_call(self, ctx: Ctx, depth: int) -> str:
        return f"({self.call(ctx, depth)})"

    def _e_len_plus_call(self, ctx: Ctx, depth: int) -> str:
        # the callee mutates acc: the left operand must be read before the call
        return f"(len(acc) + {self.call(ctx, depth)})"

    def _e_method(self, ctx: Ctx, depth: int) -> str:
        return f"(await box.add({self.expr(ctx, depth)}))"

    def _e_later(self, ctx: Ctx, depth: int) -> str:
        # await the result of an await
        return f"(await (await nd(Later({self.expr(ctx, depth)}))))"

    def _e_recurse(self, ctx: Ctx, depth: int) -> str:
        assert ctx.sig is not None
        call = self.call(ctx, depth, callee=ctx.sig, recursive=True)
        return f"({call} if depth > 0 else {self.expr(ctx, depth)})"

    def _e_conditional(self, ctx: Ctx, depth: int) -> str:
        return f"({self.expr(ctx, depth)} if {self.cond(ctx, depth)} else {self.expr(ctx, depth)})"

    def operand(self, ctx: Ctx, depth: int) -> str:
        """An operand whose evaluation is logged, to catch evaluating it when it must not be."""
        if self.coin():
            return f'log("operand", {self.expr(ctx, depth)})'
        return self.expr(ctx, depth)

    def _e_and_or(self, ctx: Ctx, depth: int) -> str:
        op = self.pick(["and", "or"])
        return f"({self.operand(ctx, depth)} {op} {self.operand(ctx, depth)})"

    def _e_comprehension(self, ctx: Ctx, depth: int) -> str:
        var = self.fresh("i")
        sources = ["range(3)", "lst", "range_expr", "acc"]
        if ctx.can_await and self.has("async_for"):
            sources.append("ticker")
        source = self.pick(sources)
        loop = "for"
        if source == "range_expr":
            source = f"range({self.expr(replace(ctx, walrus=False), depth)} % 3)"
        elif source == "ticker":  # an async comprehension
            source, loop = f"Ticker({self.number(0, 3)})", "async for"
        inner = replace(ctx, ints=(*ctx.ints, var))
        element = self.expr(inner, depth)
        condition = f" if {self.cond(inner, depth)}" if self.coin() else ""
        clause = f"{loop} {var} in {source}{condition}"
        kind = self.pick(["list", "set", "dict", "nested"])
        if kind == "list":
            return f"sum([{element} {clause}])"
        if kind == "set":  # sets only reduced: their order is no part of the semantics
            return f"len({{{element} % 3 {clause}}})"
        if kind == "dict":
            return f"sum({{{var}: {element} {clause}}}.values())"
        other = self.fresh("i")
        inner2 = replace(inner, ints=(*inner.ints, other))
        return (f"sum([{self.expr(inner2, depth)} {loop} {var} in {source} "
                f"for {other} in range({var} % 3){condition}])")

    def _e_fstring(self, ctx: Ctx, depth: int) -> str:
        inner = replace(ctx, fstring=False)
        fields = [f"{{({self.expr(inner, depth)}){self.pick(['', '!r', ':>4', '!r:<3'])}}}"
                  for _ in range(self.number(1, 2))]
        return f"len(f'<{'-'.join(fields)}>')"

    def _e_closure_call(self, ctx: Ctx, depth: int) -> str:
        return f"{self.pick(list(ctx.callables))}({self.expr(ctx, depth)})"

    def _e_async_closure_call(self, ctx: Ctx, depth: int) -> str:
        return f"(await {self.pick(list(ctx.async_callables))}({self.expr(ctx, depth)}))"

    def _e_attribute(self, ctx: Ctx, depth: int) -> str:
        return "box.v"

    def _e_walrus(self, ctx: Ctx, depth: int) -> str:
        return f"({self.pick(list(ctx.assignable))} := {self.expr(ctx, depth)})"

    def _e_len_str(self, ctx: Ctx, depth: int) -> str:
        return f"len({self.pick(list(ctx.strs))})"

    def _e_handler_args(self, ctx: Ctx, depth: int) -> str:
        return f"len({ctx.handler}.args)"

    def _e_star_params(self, ctx: Ctx, depth: int) -> str:
        assert ctx.sig is not None
        options = []
        if ctx.sig.star_args:
            options += ["sum(args)", "len(args)"]
        if ctx.sig.star_kwargs:
            options += ['kw.get("z", 0)', "len(kw)"]
        return self.pick(options)

    def _e_global_read(self, ctx: Ctx, depth: int) -> str:
        return "G"

    # --- conditions -----------------------------------------------------------------------------
    def cond(self, ctx: Ctx, depth: int = 1) -> str:
        options = ["compare", "compare", "parity"]
        if depth > 0:
            options += ["chain", "contains", "not"]
            if self.has("short_circuit"):
                options += ["bool_op", "bool_op"]
            if ctx.can_await and self.has("nd"):
                options.append("nd")
        kind = self.pick(options)
        if kind == "compare":
            op = self.pick(["<", "<=", "==", "!=", ">"])
            return f"{self.expr(ctx, depth)} {op} {self.expr(ctx, depth)}"
        if kind == "parity":
            return f"{self.expr(ctx, depth)} % 2 == 0"
        if kind == "chain":
            return f"{self.expr(ctx, depth)} < {self.operand(ctx, depth)} < {self.operand(ctx, depth)}"
        if kind == "contains":
            if self.coin():
                return f"{self.expr(ctx, depth)} in lst"
            return f'"{self.key()}" in dct'
        if kind == "not":
            return f"not ({self.cond(ctx, depth - 1)})"
        if kind == "nd":
            return f"await nd({self.cond(ctx, depth - 1)})"
        op = self.pick(["and", "or"])
        right = self.cond(ctx, depth - 1)
        if self.coin():
            right = f'log("cond", {right})'
        return f"({self.cond(ctx, depth - 1)}) {op} ({right})"

    # --- statements -----------------------------------------------------------------------------
    def block(self, ctx: Ctx, low: int = 1, high: int = 3) -> list[str]:
        ctx = replace(ctx, nesting=ctx.nesting + 1)
        lines: list[str] = []
        count = self.number(low, high)
        for _ in range(count):
            if self.budget <= 0:
                break
            self.budget -= 1
            new_lines, ctx = self.statement(ctx)
            lines += new_lines
        return lines or ["pass"]

    def statement(self, ctx: Ctx) -> tuple[list[str], Ctx]:
        options = ["assign", "log", "log", "append"]
        nested = ctx.nesting < 4
        if self.has("nd") or self.has("calls") or self.has("method"):
            options += ["await_stmt", "await_stmt"]
        if self.has("pause"):
            options += ["pause", "pause"]
        if self.has("augassign"):
            options.append("augassign")
        if nested:
            if self.has("if"):
                options += ["if", "if"]
            if self.has("for"):
                options += ["for", "for"]
            if self.has("while"):
                options.append("while")
            if self.has("try"):
                options += ["try", "try"]
            if self.has("with"):
                options.append("with")
            if self.has("async_with"):
                options.append("async_with")
            if self.has("match"):
                options.append("match")
            if self.has("walrus") and ctx.assignable:
                options.append("walrus_if")
        if self.has("break_continue") and ctx.in_loop:
            options += ["break_continue", "break_continue"]
        if self.has("raise"):
            options.append("raise")
        if self.has("return") and ctx.sig is not None:
            options.append("return")
        if self.has("unpacking"):
            options.append("unpack")
        if self.has("subscript"):
            options.append("subscript")
        if self.has("attribute"):
            options.append("attribute")
        if self.has("annotated"):
            options.append("annotated")
        if self.has("del"):
            options.append("delete")
        if self.has("assert"):
            options.append("assert")
        if self.has("global") and ctx.sig is not None:
            options.append("global")
        if self.has("closures"):
            options += ["closure", "closure"]
        if self.has("exc_info"):
            options.append("exc_info")
        if self.has("acc_rebind") and ctx.sig is not None:
            options.append("acc_rebind")
        kind = self.pick(options)
        result = getattr(self, f"_s_{kind}")(ctx)
        if isinstance(result, tuple):
            return result
        return result, ctx

    def _s_assign(self, ctx: Ctx) -> list[str]:
        if not ctx.assignable:
            return [f"log({self.expr(ctx)})"]
        return [f"{self.pick(list(ctx.assignable))} = {self.expr(ctx)}"]

    def _s_log(self, ctx: Ctx) -> list[str]:
        values = ", ".join(self.expr(ctx) for _ in range(self.number(1, 2)))
        return [f'log("{self.fresh("s")}", {values})']

    def _s_append(self, ctx: Ctx) -> list[str]:
        return [f"{self.pick(['acc', 'acc', 'lst'])}.append({self.expr(ctx)})"]

    def _s_await_stmt(self, ctx: Ctx) -> list[str]:
        options = []
        if self.has("nd"):
            options.append(f"await nd({self.expr(ctx)})")
        if self.has("calls") and self._callees(ctx):
            options.append(self.call(ctx, 1))
        if self.has("method"):
            options.append(f"await box.add({self.expr(ctx)})")
        if not options:
            return self._s_log(ctx)
        return [self.pick(options)]

    def _s_pause(self, ctx: Ctx) -> list[str]:
        return [f'PAUSE("{self.fresh("p")}")']

    def _s_augassign(self, ctx: Ctx) -> list[str]:
        if not ctx.assignable:
            return self._s_log(ctx)
        target = self.pick(list(ctx.assignable))
        op = self.pick(["+=", "-=", "*=", "//=", "%="])
        if op in ("+=", "-="):
            return [f"{target} {op} {self.expr(ctx)}"]
        return [f"{target} {op} {self.number(1, 3)}"]

    def _s_if(self, ctx: Ctx) -> list[str]:
        lines = [f"if {self.cond(ctx)}:", *_indent(self.block(ctx))]
        for _ in range(self.number(0, 2)):
            lines += [f"elif {self.cond(ctx)}:", *_indent(self.block(ctx))]
        if self.coin():
            lines += ["else:", *_indent(self.block(ctx))]
        return lines

    def _loop_else(self, ctx: Ctx) -> list[str]:
        if self.coin():
            return ["else:", *_indent(self.block(ctx, 1, 2))]
        return []

    def _s_for(self, ctx: Ctx) -> list[str]:
        var = self.fresh("x")
        kinds = ["list", "range", "lst", "dict_keys", "dict_items", "dict_values",
                 "enumerate", "zip", "str", "countdown", "reversed", "acc", "tuple"]
        if self.has("async_for"):
            kinds.append("async")
        kind = self.pick(kinds)
        ints: tuple[str, ...] = ()
        strs: tuple[str, ...] = ()
        target = var
        if kind == "list":
            items = ", ".join(self.expr(ctx) for _ in range(self.number(0, 3)))
            iterable = f"[{items}]"
            ints = (var,)
        elif kind == "range":
            iterable = f"range({self.expr(ctx)} % 4)"
            ints = (var,)
        elif kind in ("lst", "acc"):  # callees and the body may grow or shrink these
            iterable = kind
            ints = (var,)
        elif kind == "tuple":
            iterable = f"({self.expr(ctx)}, {self.expr(ctx)})"
            ints = (var,)
        elif kind == "dict_keys":
            iterable = "dct"
            strs = (var,)
        elif kind == "dict_items":
            value = self.fresh("v")
            iterable, target, ints, strs = "dct.items()", f"{var}, {value}", (value,), (var,)
        elif kind == "dict_values":
            iterable = "dct.values()"
            ints = (var,)
        elif kind == "enumerate":
            value = self.fresh("v")
            iterable, target, ints = "enumerate(lst)", f"{var}, {value}", (var, value)
        elif kind == "zip":
            value = self.fresh("v")
            iterable, target = f'zip(range({self.number(1, 3)}), "abc")', f"{var}, {value}"
            ints, strs = (var,), (value,)
        elif kind == "str":
            iterable = self.pick(['"ab"', "s"])
            strs = (var,)
        elif kind == "countdown":
            iterable = f"Countdown({self.expr(ctx)} % 4)"
            ints = (var,)
        elif kind == "async":
            iterable = f"Ticker({self.expr(ctx)} % 4)"
            ints = (var,)
        else:
            iterable = "reversed(lst)"
            ints = (var,)
        inner = replace(ctx, ints=ctx.ints + ints, strs=ctx.strs + strs, in_loop=True)
        keyword = "async for" if kind == "async" else "for"
        return [f"{keyword} {target} in {iterable}:", "    tick()",
                *_indent(self.block(inner)), *self._loop_else(ctx)]

    def _s_while(self, ctx: Ctx) -> list[str]:
        counter = self.fresh("w")
        inner = replace(ctx, in_loop=True, ints=(*ctx.ints, counter))
        return [f"{counter} = 0",
                f"while tick() and {counter} < {self.number(1, 3)} and {self.cond(ctx)}:",
                f"    {counter} += 1",
                *_indent(self.block(inner)), *self._loop_else(ctx)]

    def _s_break_continue(self, ctx: Ctx) -> list[str]:
        word = self.pick(["break", "continue"])
        if self.rarely():
            return [word]
        return [f"if {self.cond(ctx)}:", f"    {word}"]

    def _s_try(self, ctx: Ctx) -> list[str]:
        lines = ["try:", *_indent(self.block(ctx))]
        shape = self.pick(["except", "finally", "except_finally", "except_else",
                           "except_else_finally"])
        if shape != "finally":
            for _ in range(self.number(1, 2)):
                types = self.pick(list(HANDLED))
                if self.coin():
                    name = self.fresh("e")
                    inner = replace(ctx, handler=name, in_handler=True)
                    body = self.block(inner)
                    if self.has("exc_info") and self.coin():
                        body = [f'log("caught", repr({name}), repr({name}.__context__), '
                                f"repr({name}.__cause__))", *body]
                    lines += [f"except {types} as {name}:", *_indent(body)]
                else:
                    lines += [f"except {types}:",
                              *_indent(self.block(replace(ctx, handler=None, in_handler=True)))]
        if "else" in shape:
            lines += ["else:", *_indent(self.block(ctx))]
        if "finally" in shape:
            lines += ["finally:", *_indent(self.block(ctx))]
        return lines

    def _s_raise(self, ctx: Ctx) -> list[str]:
        options = ["plain", "from_new", "from_none"]
        if ctx.handler:
            options.append("from_handler")
        if ctx.in_handler:
            options += ["bare", "bare"]
        kind = self.pick(options)
        error = f"{self.pick(list(EXCEPTIONS))}({self.expr(ctx)})"
        if kind == "plain":
            statement = f"raise {error}"
        elif kind == "from_new":
            statement = f"raise {error} from {self.pick(list(EXCEPTIONS))}({self.number(0, 5)})"
        elif kind == "from_none":
            statement = f"raise {error} from None"
        elif kind == "from_handler":
            statement = f"raise {error} from {ctx.handler}"
        else:
            statement = "raise"
        if self.rarely():
            return [statement]
        return [f"if {self.cond(ctx)}:", f"    {statement}"]

    def _s_return(self, ctx: Ctx) -> list[str]:
        statement = f"return {self.expr(ctx)}"
        if self.rarely():
            return [statement]
        return [f"if {self.cond(ctx)}:", f"    {statement}"]

    def _manager_name(self, ctx: Ctx) -> str:
        name = self.fresh("w")
        if self.has("fstring") and self.coin():
            return f"f'{name}-{{({self.expr(replace(ctx, fstring=False))})}}'"
        return f'"{name}"'

    def _s_with(self, ctx: Ctx, is_async: bool = False) -> list[str]:
        items = []
        strs = []
        manager = "AsyncManager" if is_async else "Manager"
        for _ in range(self.number(1, 2)):
            suppress = ", True" if self.coin() else ""
            item = f"{manager}({self._manager_name(ctx)}{suppress})"
            if self.coin():
                name = self.fresh("m")
                item += f" as {name}"
                strs.append(name)
            items.append(item)
        inner = replace(ctx, strs=ctx.strs + tuple(strs))
        keyword = "async with" if is_async else "with"
        return [f"{keyword} {', '.join(items)}:", *_indent(self.block(inner))]

    def _s_async_with(self, ctx: Ctx) -> list[str]:
        return self._s_with(ctx, is_async=True)

    def _subject(self, ctx: Ctx) -> str:
        kind = self.pick(["int", "list", "dict", "point", "str", "nested"])
        if kind == "int":
            value = self.expr(ctx)
        elif kind == "list":
            value = f"[{', '.join(self.expr(ctx) for _ in range(self.number(0, 3)))}]"
        elif kind == "dict":
            value = f'{{"kind": {self.expr(ctx)}, "z": {self.expr(ctx)}}}'
            if self.coin():
                value = "dct"
        elif kind == "point":
            value = f"Point({self.expr(ctx)}, {self.expr(ctx)})"
        elif kind == "str":
            value = self.pick(['"ab"', '"s"', *ctx.strs])
        else:
            value = f"({self.expr(ctx)}, [{self.expr(ctx)}, {self.expr(ctx)}])"
        if self.has("nd") and self.coin():
            return f"await nd({value})"
        return value

    def _pattern(self, ctx: Ctx) -> tuple[str, tuple[str, ...], list[str]]:
        """A pattern, the int names it binds, and guard candidates over what it binds."""
        kind = self.pick(["literal", "or_as", "sequence_star", "sequence", "mapping",
                          "mapping_literal", "class_keyword", "class_positional", "class_as",
                          "builtin_class", "nested", "capture_guard", "wildcard_guard", "none"])
        a, b, c = self.fresh("m"), self.fresh("m"), self.fresh("m")
        if kind == "literal":
            return str(self.number(0, 3)), (), []
        if kind == "or_as":
            return f"({self.number(0, 2)} | {self.number(3, 5)} | \"s\") as {a}", (), [f"{a} == 1"]
        if kind == "sequence_star":
            return f"[{a}, *{b}]", (), [f"len({b}) > 1", f"await nd(len({b})) > 0"]
        if kind == "sequence":
            return f"[{a}, {b}]", (), [f"{a} == {b}"]
        if kind == "mapping":
            return f'{{"kind": {a}, **{b}}}', (), [f"len({b}) > 0", f"{a} == 0"]
        if kind == "mapping_literal":
            return f'{{"kind": {self.number(0, 3)}}}', (), []
        if kind == "class_keyword":
            return f"Point(x={self.number(0, 2)}, y={a})", (), [f"{a} > 1"]
        if kind == "class_positional":
            return f"Point({a}, {b})", (), [f"{a} == {b}", f"await nd({a}) < {b}"]
        if kind == "class_as":
            return f"Point(x={a}) as {b}", (), [f"{b}.y > {a}"]
        if kind == "builtin_class":
            return self.pick([f"int({a})", f"str() as {a}"]), (), []
        if kind == "nested":
            return f"({a}, [{b}, *{c}])", (), [f"{a} == 0"]
        if kind == "capture_guard":
            return a, (), [f"{a} == 0", f"await nd({a}) == 1"]
        if kind == "wildcard_guard":
            return "_", (), []
        return "None", (), []

    def _s_match(self, ctx: Ctx) -> list[str]:
        lines = [f"match {self._subject(ctx)}:"]
        cases = self.number(1, 4)
        for _ in range(cases):
            pattern, ints, guards = self._pattern(ctx)
            inner = replace(ctx, ints=ctx.ints + ints)
            guard = ""
            irrefutable = pattern in ("_",) or (pattern.startswith("m") and pattern[1:].isdigit())
            if guards and self.coin():
                guard = f" if {self.pick(guards)}"
            elif irrefutable or self.coin():
                guard = f" if {self.cond(inner)}"
            captured = ", ".join([repr(pattern), *_CAPTURE.findall(pattern)])
            body = [f'log("case", {captured})']
            lines += [f"    case {pattern}{guard}:", *_indent(_indent(body + self.block(inner)))]
        if self.coin():
            lines += ["    case _:", *_indent(_indent(self.block(ctx)))]
        return lines

    def _s_walrus_if(self, ctx: Ctx) -> list[str]:
        target = self.pick(list(ctx.assignable))
        lines = [f"if ({target} := {self.expr(ctx)}) > {self.number(0, 3)}:",
                 *_indent(self.block(ctx))]
        if self.coin():
            lines += ["else:", *_indent(self.block(ctx))]
        return lines

    def _s_unpack(self, ctx: Ctx) -> list[str]:
        names = list(ctx.assignable)
        if len(names) < 3:
            return self._s_log(ctx)
        a, b, c = self.draw(st.permutations(names))[:3]
        kind = self.pick(["pair", "star_list", "nested", "star_first", "swap"])
        if kind == "pair":
            return [f"{a}, {b} = {self.expr(ctx)}, {self.expr(ctx)}"]
        if kind == "star_list":
            return [f"{a}, *lst = [{self.expr(ctx)}, {self.expr(ctx)}, {self.expr(ctx)}]"]
        if kind == "nested":
            return [f"({a}, {b}), {c} = ({self.expr(ctx)}, {self.expr(ctx)}), {self.expr(ctx)}"]
        if kind == "star_first":
            return [f"*lst, {a} = [{self.expr(ctx)}, {self.expr(ctx)}, {self.expr(ctx)}]"]
        return [f"{a}, {b} = {b}, {a}"]

    def _s_subscript(self, ctx: Ctx) -> list[str]:
        kind = self.pick(["set", "aug", "acc_aug", "dict_set", "dict_aug", "slice"])
        key = f'"{self.key()}"'
        if kind == "set":
            return [f"lst[{self.expr(ctx)} % len(lst)] = {self.expr(ctx)}"]
        if kind == "aug":
            return [f"lst[{self.expr(ctx)} % len(lst)] += {self.expr(ctx)}"]
        if kind == "acc_aug":
            return ["if acc:", f"    acc[{self.expr(ctx)} % len(acc)] += {self.expr(ctx)}"]
        if kind == "dict_set":
            return [f"dct[{key}] = {self.expr(ctx)}"]
        if kind == "dict_aug":  # KeyError when the key is missing
            return [f"dct[{key}] += {self.expr(ctx)}"]
        return [f"lst[0:2] = [{self.expr(ctx)}, {self.expr(ctx)}]"]

    def _s_attribute(self, ctx: Ctx) -> list[str]:
        op = self.pick(["=", "+="])
        return [f"box.v {op} {self.expr(ctx)}"]

    def _s_annotated(self, ctx: Ctx) -> list[str]:
        if not ctx.assignable:
            return self._s_log(ctx)
        return [f"{self.pick(list(ctx.assignable))}: int = {self.expr(ctx)}"]

    def _s_delete(self, ctx: Ctx) -> list[str]:
        kind = self.pick(["temp", "list", "dict_guarded", "dict"])
        if kind == "temp":
            name = self.fresh("t")
            return [f"{name} = {self.expr(ctx)}", f'log("{name}", {name})', f"del {name}"]
        if kind == "list":
            return ["if len(lst) > 1:", f"    del lst[{self.expr(ctx)} % len(lst)]"]
        key = f'"{self.key()}"'
        if kind == "dict_guarded":
            return [f"if {key} in dct:", f"    del dct[{key}]"]
        return [f"del dct[{key}]"]  # KeyError when missing

    def _s_assert(self, ctx: Ctx) -> list[str]:
        if self.rarely():  # may fail
            return [f"assert {self.cond(ctx)}, {self.expr(ctx)}"]
        return [f"assert ({self.cond(ctx)}) or len(acc) >= 0, {self.expr(ctx)}"]

    def _s_global(self, ctx: Ctx) -> list[str]:
        return [f"G {self.pick(['=', '+='])} {self.expr(ctx)}"]

    def _s_closure(self, ctx: Ctx) -> tuple[list[str], Ctx]:
        name = self.fresh("fn")
        parameter = self.fresh("y")
        body_ctx = replace(ctx, ints=(*ctx.ints, parameter), assignable=(), can_await=False,
                           walrus=False, handler=None)
        kinds = ["lambda", "def", "nonlocal", "default"]
        if self.has("nested_async"):
            kinds += ["async", "async"]
        kind = self.pick(kinds)
        if kind == "async":
            return self._nested_async(ctx, name, parameter)
        if kind == "lambda":
            lines = [f"{name} = lambda {parameter}: {self.expr(body_ctx)}"]
        elif kind == "def":
            lines = [f"def {name}({parameter}):", f"    return {self.expr(body_ctx)}"]
        elif kind == "default":
            default = self.expr(replace(ctx, can_await=False, walrus=False))
            lines = [f"def {name}({parameter}, extra={default}, *, scale=1):",
                     f"    return {self.expr(body_ctx)} + extra * scale"]
        else:
            if not ctx.assignable:
                return self._s_log(ctx), ctx
            target = self.pick(list(ctx.assignable))
            lines = [f"def {name}({parameter}):", f"    nonlocal {target}",
                     f"    {target} = {target} + {parameter}", f"    return {target}"]
        return lines, replace(ctx, callables=(*ctx.callables, name))

    def _nested_async(self, ctx: Ctx, name: str, parameter: str) -> tuple[list[str], Ctx]:
        """A nested ``async def`` (a durable frame sharing this function's cells)."""
        body_ctx = replace(ctx, ints=(*ctx.ints, parameter), assignable=(), walrus=False,
                           handler=None, in_handler=False, in_loop=False)
        body = []
        if ctx.assignable and self.coin():
            target = self.pick(list(ctx.assignable))
            body += [f"nonlocal {target}", f"{target} = {target} + {parameter}"]
        if self.has("nd") and self.coin():
            body.append(f"{parameter} = await nd({parameter})")
        if self.has("pause") and self.coin():
            body.append(f'PAUSE("{self.fresh("p")}")')
        body.append(f"return {self.expr(body_ctx)}")
        lines = [f"async def {name}({parameter}):", *_indent(body)]
        return lines, replace(ctx, async_callables=(*ctx.async_callables, name))

    def _s_exc_info(self, ctx: Ctx) -> list[str]:
        return ['log("exc_info", repr(sys.exc_info()[1]))']

    def _s_acc_rebind(self, ctx: Ctx) -> list[str]:
        return [self.pick([f"acc = acc + [{self.expr(ctx)}]", "acc = list(acc)"])]

    # --- functions and the program ----------------------------------------------------------
    def signature(self, index: int) -> Signature:
        params = self.has("parameters")
        return Signature(
            index=index,
            positional=("p0", "p1")[: self.number(1, 2)],
            posonly=params and self.coin(),
            default=self.number(0, 3) if params and self.coin() else None,
            star_args=params and self.coin(),
            kwonly_required=params and self.coin(),
            kwonly_default=self.number(0, 3) if params and self.coin() else None,
            depth=self.has("recursion") and self.coin(),
            star_kwargs=params and self.coin(),
        )

    def function(self, sig: Signature) -> list[str]:
        ints = ["a", "b", "c"]
        if self.has("clashing_names"):
            ints += list(self.draw(st.lists(st.sampled_from(CLASHING_NAMES), min_size=1,
                                            max_size=3, unique=True)))
        preamble = ["global G"] if self.has("global") else []
        preamble.append("tick()")
        parameters = sig.int_parameters()
        for position, name in enumerate(ints):
            preamble.append(f"{name} = {parameters[position % len(parameters)]} + {position}")
        preamble += ["lst = [p0, 2, 3]", 'dct = {"x": 1, "y": p0}', "box = Box(p0)",
                     f's = "{self.pick(["ab", "xyz", ""])}"']
        readable = (*ints, *parameters, *(("depth",) if sig.depth else ()))
        ctx = Ctx(sig=sig, ints=readable, assignable=(*ints, *parameters), strs=("s",))
        body = self.block(ctx, 3, 10)
        if self.has("calls") and sig.index + 1 < len(self.signatures):
            # the call graph is surely used: f_k awaits f_k+1 somewhere at its top level
            call = self.call(ctx, 1, callee=self.signatures[sig.index + 1])
            starts = [i for i, line in enumerate(body) if _STATEMENT_START.match(line)]
            at = self.draw(st.sampled_from([*starts, len(body)]))
            body.insert(at, self.pick([f"acc.append({call})", f'log("call", {call})']))
        return [sig.header(), *_indent([*preamble, *body, f"return {self.expr(ctx)}"])]

    def main(self) -> list[str]:
        ctx = Ctx(sig=None, ints=(), assignable=())
        lines = ["async def main():", "    acc = []"]
        lines.append(f"    result = [{self.call(ctx, 0, callee=self.signatures[0])}]")
        if self.coin():  # again, over the state the first call left
            lines.append(f"    result.append({self.call(ctx, 0, callee=self.signatures[0])})")
        lines.append("    return result, acc" + (", G" if self.has("global") else ""))
        return lines


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


@st.composite
def programs(draw: Callable[..., object], *, exclude: frozenset[str] = frozenset(),
             max_functions: int = 3, max_statements: int = 30, fuel: int = 150) -> str:
    """The source text of a random program with an ``async def main()`` entry."""
    # swarm: each program uses a random subset of the features (the core ones more often);
    # every draw shrinks towards "off"
    features = frozenset(
        f for f in FEATURES
        if f not in exclude and draw(st.integers(0, 3 if f in COMMON else 1)) > 0
    )
    builder = _Builder(draw, features)
    count = draw(st.integers(1, max_functions))
    builder.signatures = [builder.signature(index) for index in range(count)]
    functions = []
    for sig in builder.signatures:
        builder.budget = draw(st.integers(3, max_statements))
        functions += ["", *builder.function(sig), ""]
    return "\n".join([SUPPORT.format(fuel=fuel), *functions, *builder.main()]) + "\n"
