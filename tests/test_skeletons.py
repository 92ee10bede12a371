"""Bounded-exhaustive control-flow skeletons, run plainly and durably.

Every program is a loop around one statement *shape*: a ``try`` in each of its
forms, ``try`` nested in a ``try`` body, ``finally`` or handler, a loop inside a
``try``, or a ``with``/``async with``. The shape has *slots* (two in a ``try``
body, one in each handler, ``else`` and ``finally``) filled from small palettes
of statements: suspensions, conditional ``raise``/``continue``/``break``/
``return``, a durable call that raises, a bare ``raise`` in handlers, a
``raise`` in ``finally``, logging (which also records ``sys.exc_info()`` and its
``__context__``, and writes or reads a local ``v`` carried from slot to slot, so
liveness across exception edges is checked too) and ``pass``. Suspensions are where the lowering happens, so a
filling is kept only if the shape suspends somewhere.

Which fillings:

* shapes without ``small`` palettes: every filling (``itertools.product``);
* the others: every filling from their 2-4 item ``small`` palettes, plus
  fillings from the full palettes added until every pair of items in every
  pair of slots occurs (a deterministic greedy pairwise cover).

A suspension slot is enumerated abstractly (``S``) and made concrete by
rotating through three kinds (an awaited durable helper that pauses inside, an
awaited user coroutine, a ``PAUSE``), so each kind lands in each slot without
tripling the count. Every filling runs in ``for x in range(3)``; a quarter of
them (by a stable hash) also in the same loop as a ``while``, another quarter
as an ``async for`` over an iterator whose ``__anext__`` is a durable frame.

Each program runs through ``entry()`` (which logs the chain of an escaping
exception): plainly, durably without restarts, and durably with a restart after
every save (``save_every_await=True``; a fresh runtime over the same store each
time). Outcome and trace must be equal. Programs share modules (so the helpers
compile once) and are spread over up to two worker processes, since compiling
dominates. A failure shows each failing program as a standalone source for
``harness.compare``.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import random
import signal
import textwrap
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import load_module, run_durable, run_plain

# --- the programs' shared helpers -------------------------------------------------------------
HELPERS = '''\
import sys

_prelude_log = log
FUEL = 300


def log(*items):
    # fuel: a lowering bug that loops forever runs out of trace instead of hanging
    if len(TRACE) >= FUEL:
        raise RuntimeError("out of fuel")
    return _prelude_log(*items)


def exc():
    # the exception being handled (sys.exc_info) and its context
    error = sys.exc_info()[1]
    return None if error is None else (repr(error), repr(error.__context__))


async def ask(x):
    # a durable helper: its own frame, pausing inside
    PAUSE("ask")
    return await nd(("ask", x))


async def boom(x):
    # a durable helper that raises into its caller after pausing
    PAUSE("boom")
    if x == 0:
        raise ValueError(x)
    return x


async def entry(program):
    # the entry point: runs a program and logs the chain of the exception that escapes it
    try:
        return await program()
    except Exception as error:
        log("escaped", repr(error), repr(error.__context__), repr(error.__cause__))
        raise
'''

COUNT = '''\
class Count:
    # an async iterator over range(n) whose __anext__ is a durable frame
    def __init__(self, n):
        self.n = n
        self.i = -1

    def __aiter__(self):
        return self

    async def __anext__(self):
        self.i += 1
        if self.i >= self.n:
            raise StopAsyncIteration
        await nd(("next", self.i))
        return self.i
'''

MANAGERS = '''\
class Manager:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress

    def __enter__(self):
        log("enter", self.name, exc())
        return self.name

    def __exit__(self, kind, value, tb):
        log("exit", self.name, kind and kind.__name__, exc())
        return self.suppress and kind is ValueError


class AsyncManager:
    def __init__(self, name, suppress=False):
        self.name = name
        self.suppress = suppress

    async def __aenter__(self):
        log("enter", self.name, exc())
        await nd(("aenter", self.name))
        return self.name

    async def __aexit__(self, kind, value, tb):
        log("exit", self.name, kind and kind.__name__, exc())
        await nd(("aexit", self.name))
        return self.suppress and kind is ValueError
'''


# --- palettes -----------------------------------------------------------------------------------
# "S" is an abstract suspension made concrete by _concrete(); "{slot}" becomes the slot's name.
# (the exception being handled is read after the suspension: it must survive a restart)
SUSPENSIONS = {
    "ask": "log(await ask(x), exc())",
    "pause": 'PAUSE("p")\nlog("{slot}", x, exc())',
    "nd": "log(await nd(x), exc())",
}
# in a handler, the bound exception too
HANDLER_SUSPENSIONS = {
    "ask": "log(await ask(x), type(e).__name__, exc())",
    "pause": 'PAUSE("p")\nlog("{slot}", x, repr(e), exc())',
    "nd": "log(await nd(x), repr(e))",
}

# `v` carries a value from a body slot to later slots, across suspensions and restarts
BODY = {
    "pass": "pass",
    "S": None,
    "log": 'v = ("{slot}", x)\nlog(v, exc())',
    "raise": "if x == 0: raise ValueError(x)",  # one line: liveness reads past it
    "Sraise": "log(await boom(x))",  # a suspension that raises at x == 0
    "cont": "if x == 0:\n    continue",
    "brk": "if x == 1:\n    break",
    "ret": 'if x == 1:\n    return ("{slot}", x)',
}
HANDLER = {
    "pass": "pass",
    "S": None,
    "log": 'log("{slot}", x, v, repr(e), exc())\nv = ("{slot}", x)',
    "cont": "continue",
    "brk": "break",
    "ret": 'return ("{slot}", x)',
    "reraise": "raise",
    "S+reraise": "{S}\nraise",
}
FINALLY = {
    "pass": "pass",
    "S": None,
    "log": 'log("{slot}", x, v, exc())',
    "cont": "if x < 2:\n    continue",
    "brk0": "if x == 0:\n    break",
    "brk1": "if x == 1:\n    break",
    "ret0": 'if x == 0:\n    return ("{slot}", x)',
    "raise": "if x == 1:\n    raise KeyError(x)",
}
ELSE = {
    "pass": "pass",
    "S": None,
    "log": 'log("{slot}", x, v, exc())',
    "raise": "if x == 1:\n    raise ValueError(x)",
    "cont": "if x == 1:\n    continue",
    "brk": "if x == 1:\n    break",
    "ret": 'if x == 2:\n    return ("{slot}", x)',
}
PALETTES = {"body": BODY, "handler": HANDLER, "finally": FINALLY, "else": ELSE}

CATCH = "except (ValueError, KeyError) as e:"


@dataclass(frozen=True)
class Shape:
    template: str  # ``{slot}`` lines are replaced by the slot's statements
    slots: dict[str, str]  # slot -> palette name
    small: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sub-palettes, for > 3 slots
    suspends: bool = False  # the shape suspends by itself (async with): no S needed


# the sub-palettes that larger shapes enumerate exhaustively: a suspension or a jump before
# the main action, the main actions, and the reactions to them
B2 = ("S", "cont")
B4 = ("S", "raise", "brk", "ret")
H4 = ("S", "reraise", "cont", "ret")
F4 = ("S", "cont", "brk1", "raise")
E4 = ("S", "log", "raise", "ret")

SHAPES: dict[str, Shape] = {
    "try_finally": Shape("""
        try:
            {b1}
            {b2}
        finally:
            {f}
        """, {"b1": "body", "b2": "body", "f": "finally"}),
    "try_except": Shape(f"""
        try:
            {{b1}}
            {{b2}}
        {CATCH}
            {{h}}
        """, {"b1": "body", "b2": "body", "h": "handler"}),
    "try_except_finally": Shape(f"""
        try:
            {{b1}}
            {{b2}}
        {CATCH}
            {{h}}
        finally:
            {{f}}
        """, {"b1": "body", "b2": "body", "h": "handler", "f": "finally"},
        {"b1": B2, "b2": B4, "h": H4, "f": F4}),
    "try_except_else": Shape(f"""
        try:
            {{b1}}
            {{b2}}
        {CATCH}
            {{h}}
        else:
            {{e}}
        """, {"b1": "body", "b2": "body", "h": "handler", "e": "else"},
        {"b1": B2, "b2": B4, "h": H4, "e": E4}),
    "try_except_else_finally": Shape(f"""
        try:
            {{b1}}
            {{b2}}
        {CATCH}
            {{h}}
        else:
            {{e}}
        finally:
            {{f}}
        """, {"b1": "body", "b2": "body", "h": "handler", "e": "else", "f": "finally"},
        {"b1": B2, "b2": ("S", "raise", "brk"), "h": ("S", "reraise", "cont"),
         "e": ("S", "raise", "ret"), "f": ("S", "cont", "raise")}),
    # try/finally inside try/except: the inner finally's pending records meet the outer handler
    "finally_in_except": Shape(f"""
        try:
            {{b1}}
            try:
                {{b2}}
            finally:
                {{f}}
        {CATCH}
            {{h}}
        """, {"b1": "body", "b2": "body", "f": "finally", "h": "handler"},
        {"b1": ("S", "raise"), "b2": B4, "f": F4, "h": H4}),
    # try/except inside try/finally
    "except_in_finally": Shape(f"""
        try:
            try:
                {{b1}}
            {CATCH}
                {{h}}
            {{b2}}
        finally:
            {{f}}
        """, {"b1": "body", "h": "handler", "b2": "body", "f": "finally"},
        {"b1": B4, "h": H4, "b2": ("S", "cont"), "f": F4}),
    # try/finally inside try/finally
    "finally_in_finally_body": Shape("""
        try:
            try:
                {b1}
            finally:
                {f1}
            {b2}
        finally:
            {f2}
        """, {"b1": "body", "f1": "finally", "b2": "body", "f2": "finally"},
        {"b1": B4, "f1": F4, "b2": B2, "f2": F4}),
    # try/finally inside an except handler: the handled exception is restored after it
    "finally_in_handler": Shape(f"""
        try:
            {{b}}
        {CATCH}
            try:
                {{h1}}
            finally:
                {{f}}
            {{h2}}
        """, {"b": "body", "h1": "handler", "f": "finally", "h2": "handler"},
        {"b": ("raise", "Sraise"), "h1": H4, "f": F4, "h2": ("S", "reraise", "S+reraise")}),
    # an inner loop inside try/finally: its break and continue do not leave the try
    "loop_in_try_finally": Shape("""
        try:
            for y in range(2):
                log("inner", x, y)
                {b1}
                {b2}
        finally:
            {f}
        """, {"b1": "body", "b2": "body", "f": "finally"},
        {"b1": ("S", "Sraise", "cont"), "b2": ("S", "cont", "brk", "ret"), "f": ("S", "log", "cont", "brk1")}),
    # a try statement inside a finally clause, run while the outer completion is pending
    "try_in_finally": Shape(f"""
        try:
            {{b1}}
            {{b2}}
        finally:
            try:
                {{f1}}
            {CATCH}
                {{h}}
            {{f2}}
        """, {"b1": "body", "b2": "body", "f1": "finally", "h": "handler", "f2": "finally"},
        {"b1": ("S", "raise"), "b2": ("S", "cont", "ret"), "f1": ("S", "raise", "brk0"),
         "h": ("S", "reraise", "cont"), "f2": ("S", "cont", "ret0")}),
}

WITH_SHAPES: dict[str, Shape] = {
    "with": Shape("""
        with Manager(x) as m:
            {b1}
            {b2}
        log("after with", m)
        """, {"b1": "body", "b2": "body"}),
    "with_suppress": Shape("""
        with Manager(x, suppress=True) as m:
            {b1}
            {b2}
        log("after with", m)
        """, {"b1": "body", "b2": "body"}),
    "async_with": Shape("""
        async with AsyncManager(x) as m:
            {b1}
            {b2}
        log("after with", m)
        """, {"b1": "body", "b2": "body"}, suspends=True),
    "async_with_suppress": Shape("""
        async with AsyncManager(x, suppress=True) as m:
            {b1}
            {b2}
        log("after with", m)
        """, {"b1": "body", "b2": "body"}, suspends=True),
    # a with statement inside try/finally: the exit runs before the finally
    "with_in_try_finally": Shape("""
        try:
            with Manager(x) as m:
                {b}
        finally:
            {f}
        """, {"b": "body", "f": "finally"}),
    # try/finally inside async with: the finally runs before the exit
    "try_finally_in_async_with": Shape("""
        async with AsyncManager(x) as m:
            try:
                {b}
            finally:
                {f}
            log("after try", m)
        """, {"b": "body", "f": "finally"}, suspends=True),
}

LOOPS = {
    "for": """
        async def {name}():
            v = None
            for x in range(3):
                log("top", x)
                {shape}
                log("bottom", x, v)
            else:
                log("loop else")
            log("after loop", x, v)
            return ("end", x)
        """,
    "async_for": """
        async def {name}():
            v = None
            async for x in Count(3):
                log("top", x)
                {shape}
                log("bottom", x, v)
            else:
                log("loop else")
            log("after loop", x, v)
            return ("end", x)
        """,
    "while": """
        async def {name}():
            v = None
            x = -1
            while x < 2:
                x += 1
                log("top", x)
                {shape}
                log("bottom", x, v)
            else:
                log("loop else")
            log("after loop", x, v)
            return ("end", x)
        """,
}


# --- generation ---------------------------------------------------------------------------------
def _suspends(shape: Shape, filling: tuple[str, ...]) -> bool:
    return shape.suspends or any(item.startswith("S") for item in filling)


def _pairs(filling: tuple[str, ...]) -> set[tuple[int, str, int, str]]:
    return {(i, filling[i], j, filling[j]) for i, j in itertools.combinations(range(len(filling)), 2)}


_fillings: dict[str, list[tuple[str, ...]]] = {}


def fillings(shape: Shape) -> list[tuple[str, ...]]:
    """The fillings of the shape's slots (in slot order) that the test runs."""
    if shape.template not in _fillings:
        _fillings[shape.template] = _enumerate(shape)
    return _fillings[shape.template]


def _enumerate(shape: Shape) -> list[tuple[str, ...]]:
    palettes = [list(PALETTES[p]) for p in shape.slots.values()]
    if not shape.small:
        return [f for f in itertools.product(*palettes) if _suspends(shape, f)]
    small = [shape.small[slot] for slot in shape.slots]
    chosen = [f for f in itertools.product(*small) if _suspends(shape, f)]
    # greedy pairwise cover of the full palettes, on top of the exhaustive small ones
    candidates = [f for f in itertools.product(*palettes) if _suspends(shape, f)]
    needed = set().union(*(_pairs(f) for f in candidates))
    needed -= set().union(*(_pairs(f) for f in chosen))
    rng = random.Random(len(candidates))  # deterministic
    while needed:
        sample = rng.sample(candidates, min(200, len(candidates)))
        best = max(sample, key=lambda f: len(_pairs(f) & needed))
        if not _pairs(best) & needed:  # sampling missed: take a candidate for some needed pair
            i, a, j, b = min(needed)
            best = next(f for f in candidates if f[i] == a and f[j] == b)
        chosen.append(best)
        needed -= _pairs(best)
    return list(dict.fromkeys(chosen))


def _indent_into(template: str, key: str, text: str) -> str:
    """Replace the line holding ``{key}`` by ``text`` indented like that line."""
    out = []
    for line in template.splitlines():
        if line.strip() == "{" + key + "}":
            pad = line[: len(line) - len(line.lstrip())]
            out.append(textwrap.indent(text, pad, lambda _: True))
        else:
            out.append(line)
    return "\n".join(out)


def _concrete(shape: Shape, filling: tuple[str, ...], rotation: Iterator[str]) -> str:
    text = textwrap.dedent(shape.template).strip("\n")
    for (slot, palette), item in zip(shape.slots.items(), filling, strict=True):
        suspensions = HANDLER_SUSPENSIONS if palette == "handler" else SUSPENSIONS
        code = PALETTES[palette][item]
        if item == "S":
            code = suspensions[next(rotation)]
        elif "{S}" in code:
            code = code.replace("{S}", suspensions[next(rotation)])
        text = _indent_into(text, slot, code.replace("{slot}", slot))
    return text


@dataclass(frozen=True)
class Program:
    label: str  # shape, loop and filling
    name: str  # the function's name in its module
    source: str  # the function alone, as ``async def {name}()``

    def standalone(self) -> str:
        """The program as a source for ``harness.compare`` (entry ``main``)."""
        extra = "".join(text + "\n\n" for name, text in (("Count(", COUNT), ("Manager(", MANAGERS))
                        if name in self.source)
        body = self.source.replace(f"async def {self.name}(", "async def body(", 1)
        return f"{HELPERS}\n\n{extra}{body}\n\nasync def main():\n    return await entry(body)\n"


def programs(shapes: dict[str, Shape], shape_name: str, loop: str) -> list[Program]:
    shape = shapes[shape_name]
    rotation = itertools.cycle(SUSPENSIONS)
    chosen = fillings(shape)
    if loop != "for":  # the other loops each take a quarter, chosen by a stable hash
        quarter = list(LOOPS).index(loop) - 1
        chosen = [f for f in chosen if zlib.crc32(",".join(f).encode()) % 4 == quarter]
    found = []
    for index, filling in enumerate(chosen):
        body = _concrete(shape, filling, rotation)
        name = f"p{index}"
        source = _indent_into(textwrap.dedent(LOOPS[loop]).strip("\n"), "shape", body)
        source = source.replace("{name}", name)
        items = ",".join(f"{slot}={item}" for slot, item in zip(shape.slots, filling, strict=True))
        found.append(Program(f"{shape_name}/{loop}/{items}", name, source + "\n"))
    return found


# --- running ------------------------------------------------------------------------------------
BATCH = 40  # programs per module, at most
TIMEOUT = 30  # seconds per program, for a lowering that loops without logging
MODES = {
    "no restarts": {"crash": lambda n: False, "save_every_await": False},
    "restart after every save": {"save_every_await": True},
}
Check = Callable[["Program", list[Any]], list[str]]


def _timeout(signum: int, frame: Any) -> None:
    raise TimeoutError("program ran too long")


Problem = tuple[Program, str]  # a program and what differed


async def _run_one(plain: Any, durable: Any, program: Program, check: Check | None) -> list[Problem]:
    """Run one program plainly and in each durable mode; describe every difference."""
    plain.TRACE.clear()
    expected = await run_plain(plain, "entry", (getattr(plain, program.name),))
    problems = [] if check is None else [(program, text) for text in check(program, expected[1])]
    for mode, options in MODES.items():
        durable.TRACE.clear()
        try:
            result, trace, _ = await run_durable(durable, "entry", (getattr(durable, program.name),),
                                                 **options)
        except Exception as error:  # the driver gave up (no end after max_runs, timeout)
            result, trace = ("driver raised", type(error).__name__, str(error)), None
        if (result, trace) != expected:
            problems.append((program, (
                f"--- {program.label} [{mode}]\n"
                f"plain:   {expected[0]!r}\n         {expected[1]!r}\n"
                f"durable: {result!r}\n         {trace!r}"
            )))
    return problems


async def _run_batch(batch: list[Program], directory: Path, check: Check | None) -> list[Problem]:
    text = "\n\n".join([HELPERS, COUNT, MANAGERS, *(p.source for p in batch)])
    plain = load_module(text, directory, durable=False)
    durable = load_module(text, directory, durable=True)
    problems: list[Problem] = []
    for program in batch:
        signal.alarm(TIMEOUT)
        try:
            problems += await _run_one(plain, durable, program, check)
        finally:
            signal.alarm(0)
    return problems


def _work(batch: list[Program], directory: str, check: Check | None) -> list[Problem]:
    """One batch in its own directory (module names repeat across worker processes)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGALRM, _timeout)
    try:
        return asyncio.run(_run_batch(batch, path, check))
    finally:
        signal.signal(signal.SIGALRM, previous)


def _workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    forkable = "fork" in multiprocessing.get_all_start_methods()
    return min(2, cpus) if forkable else 1


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes (forked, so they share what is compiled and imported), or None."""
    workers = _workers()
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as executor:
        yield executor


def run_programs(found: list[Program], directory: Path, pool: ProcessPoolExecutor | None,
                 check: Check | None = None) -> list[Problem]:
    """Every difference between plain and durable runs of ``found``."""
    workers = _workers() if pool is not None else 1
    size = max(1, min(BATCH, -(-len(found) // (2 * workers))))  # two batches per worker at least
    batches = [found[i:i + size] for i in range(0, len(found), size)]
    dirs = [str(directory / f"batch{i}") for i in range(len(batches))]
    checks = [check] * len(batches)
    results = (pool.map if pool is not None else map)(_work, batches, dirs, checks)
    return [problem for problems in results for problem in problems]


def _fail_if_any(count: int, problems: list[Problem]) -> None:
    if not problems:
        return
    by_program: dict[Program, list[str]] = {}
    for program, what in problems:
        by_program.setdefault(program, []).append(what)
    shown = ["\n".join(whats) + "\n" + program.source for program, whats in list(by_program.items())[:4]]
    pytest.fail(
        f"{len(problems)} differences in {len(by_program)} of {count} programs; the first "
        f"{len(shown)} programs (each runs after test_skeletons.HELPERS):\n\n" + "\n".join(shown)
        + "\n\nThe first as a standalone source for harness.compare:\n\n"
        + problems[0][0].standalone(),
        pytrace=False,
    )


# --- tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_try_skeletons(shape: str, loop: str, tmp_path: Path, pool: ProcessPoolExecutor | None) -> None:
    found = programs(SHAPES, shape, loop)
    _fail_if_any(len(found), run_programs(found, tmp_path, pool))


def enter_exit_once(program: Program, trace: list[Any]) -> list[str]:
    """Each iteration enters its manager once and exits it once, in that order."""
    events = [item[0] for item in trace
              if isinstance(item, tuple) and item[0] in ("top", "enter", "exit")]
    if events == ["top", "enter", "exit"] * events.count("top"):
        return []
    return [f"--- {program.label}: not one enter and one exit per iteration (plain run)\n{trace!r}"]


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("shape", list(WITH_SHAPES))
def test_with_skeletons(shape: str, loop: str, tmp_path: Path, pool: ProcessPoolExecutor | None) -> None:
    found = programs(WITH_SHAPES, shape, loop)
    _fail_if_any(len(found), run_programs(found, tmp_path, pool, check=enter_exit_once))


def test_enumeration() -> None:
    """Every slot sees every item of its palette, every kind of suspension runs, and the
    total stays within the time budget."""
    total = 0
    for shapes in (SHAPES, WITH_SHAPES):
        for name, shape in shapes.items():
            chosen = fillings(shape)
            for index, palette in enumerate(shape.slots.values()):
                assert {f[index] for f in chosen} == set(PALETTES[palette]), (name, index)
            sources = "".join(p.source for p in programs(shapes, name, "for"))
            assert all(s.splitlines()[0].strip() in sources for s in SUSPENSIONS.values()), name
            total += sum(len(programs(shapes, name, loop)) for loop in LOOPS)
    assert 2_500 <= total <= 4_000, total
