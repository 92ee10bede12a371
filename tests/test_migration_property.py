"""Property: a random program, paused at a random save, moves onto an edited version soundly.

Two kinds of random edit that change what the program does in no way:

- statements that do nothing (``_edit = None``) inserted at random places in
  its functions: every resume point keeps its id and no variable it needs goes
  missing, so the frame must move;
- one awaited call rewritten to pass its arguments another way
  (``f(a, b)`` -> ``f(*[a, b])``): that resume point no longer exists, so a frame
  standing there stays; so may one standing at another await of the same
  statement, which changed around it; every other frame must move.

What moves must end as the plain run of the unedited program does. What stays
must be refused naming that point, and left exactly as it was (the old code
then finishes it). The one other refusal allowed is documented: a function,
lambda or class defined in durable code and saved in the state (found again by
its place in its function, so it does not move).
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

from harness import (
    CrashingBackend,
    SimulatedCrash,
    load_module,
    reload_module,
    run_durable,
    run_plain,
)
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from program_generator import IN_PROCESS_ONLY, programs

from durable import DurableRuntime, InMemoryStateStore, PauseForEventException, make_durable
from durable.clock import VirtualClock

EXAMPLES = int(os.environ.get("DURABLE_MIGRATION_EXAMPLES", "40"))
EDIT = "_edit = None"


@st.composite
def edited(draw: st.DrawFn) -> tuple[str, str]:
    """A program, and the same program with no-op statements inserted in its functions."""
    source = draw(programs(exclude=IN_PROCESS_ONLY, max_statements=15))
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("async def "))
    places = [i for i in range(start, len(lines)) if lines[i].startswith("    ")
              and lines[i].strip()]
    chosen = sorted(set(draw(st.lists(st.sampled_from(places), min_size=1, max_size=4))),
                    reverse=True)
    for i in chosen:
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        lines.insert(i, indent + EDIT)
    changed = "\n".join(lines) + "\n"
    assume(_only_inserted(source, changed))
    return source, changed


def _only_inserted(source: str, changed: str) -> bool:
    """``changed`` parses, and is ``source`` plus ``_edit = None`` statements."""
    try:
        tree = ast.parse(changed)
    except SyntaxError:
        return False
    inserted = ast.parse(EDIT).body[0]
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                kept = [s for s in block if ast.dump(s) != ast.dump(inserted)]
                if kept or not block:
                    setattr(node, field, kept)
    return ast.dump(tree) == ast.dump(ast.parse(source))


async def stopped_at(module: Any, save: int) -> InMemoryStateStore:
    """A store holding the instance as it was right after save number ``save`` of a run."""
    store = InMemoryStateStore()
    program = make_durable(module.main)
    saves, clock = itertools.count(), VirtualClock()
    while True:
        backend = CrashingBackend(store, lambda n: n == save, saves, clock)
        try:
            await DurableRuntime(program, backend, "instance", save_every_await=True).run()
            return store
        except SimulatedCrash:
            return store
        except PauseForEventException as pause:
            if pause.event is not None:
                backend.publish_event("instance", pause.event)
            else:
                clock.set(pause.until)
        except Exception:
            return store


@st.composite
def rewritten_call(draw: st.DrawFn) -> tuple[str, str, str]:
    """A program (normalised), the same with one awaited call's arguments passed as ``*[...]``,
    and that call's old code."""
    source = draw(programs(exclude=IN_PROCESS_ONLY, max_statements=15))
    tree = ast.parse(source)
    first = next(i for i, node in enumerate(tree.body)
                 if isinstance(node, ast.AsyncFunctionDef))
    calls = [node.value for top in tree.body[first:] for node in ast.walk(top)
             if isinstance(node, ast.Await) and isinstance(node.value, ast.Call)
             and node.value.args and not node.value.keywords
             and not any(isinstance(arg, ast.Starred) for arg in node.value.args)]
    assume(calls)
    call = draw(st.sampled_from(calls))
    old = ast.unparse(call)
    normalised = ast.unparse(tree) + "\n"
    call.args = [ast.Starred(ast.List(call.args, ast.Load()), ast.Load())]
    return normalised, ast.unparse(tree) + "\n", old


async def check(source: str, changed: str, save: int, directory: Path,
                removed: str | None = None) -> None:
    """Pause ``source`` at a save, resume on ``changed``: it ends as the plain run, or (if it
    stood at ``removed``, the code of a point the edit removed) it stays, intact."""
    plain, _ = await run_plain(load_module(source, directory, durable=False), "main", ())
    module = load_module(source, directory, durable=True)
    seen: list[int] = []
    await run_durable(module, "main", (), crash=lambda n: seen.append(n) or False)
    assume(len(seen) > 1)
    store = await stopped_at(module, save % (len(seen) - 1))  # any save but the last
    before = await store.load("instance")
    path = Path(module.__file__)
    original = path.read_text()
    path.write_text(original.replace(source, changed))
    moved = await run_durable(reload_module(module), "main", (), crash=lambda n: False,
                              store=store)
    outcome = moved[0]
    if outcome[:2] == ("error", "IncompatibleStateError"):
        closure = "function, lambda or class defined in it" in str(outcome)
        event("stays: a saved closure" if closure else "stays: its point was removed")
        # the edited call's point, or the statement around it (values spilled before an
        # await there mean something else in the new statement)
        assert closure or (removed is not None and removed in str(outcome)), outcome
        assert await store.load("instance") == before  # left exactly as it was
        path.write_text(original)
        finished = await run_durable(reload_module(module), "main", (), crash=lambda n: False,
                                     store=store)
        assert finished[0] == plain
    else:
        event("moves")
        assert outcome == plain, f"moved onto the edited code: {outcome!r}, plain run: {plain!r}"


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(pair=edited(), save=st.integers(0, 60))
def test_a_frame_moves_onto_code_with_statements_inserted_and_ends_as_the_plain_run(
        pair: tuple[str, str], save: int, tmp_path_factory) -> None:
    source, changed = pair
    note(f"program:\n{source}\nedited:\n{changed}")
    asyncio.run(check(source, changed, save, tmp_path_factory.mktemp("migration")))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(triple=rewritten_call(), save=st.integers(0, 60))
def test_a_frame_at_a_rewritten_await_stays_intact_and_every_other_frame_moves(
        triple: tuple[str, str, str], save: int, tmp_path_factory) -> None:
    source, changed, removed = triple
    note(f"program:\n{source}\nedited:\n{changed}\nremoved point: {removed}")
    asyncio.run(check(source, changed, save, tmp_path_factory.mktemp("migration"), removed))
