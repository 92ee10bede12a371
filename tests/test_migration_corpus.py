"""Edit pairs: pause v1 at every save, resume on v2, compare with the expectation by hand.

Each case is a module (v1) and the edits that make v2. For every save a full
run of v1 makes (the start, each completed durable call, each pause), a fresh
instance runs v1 until that save and stops there, as if its process died;
then the module is switched to v2 and the instance resumes. The expectation
says what v2 returns from there, per resume point (the id of the root fiber's
top frame; ``"*"`` for the others) or per save in order; ``STAYS``: the
instance is refused, its state is left as it was, and v1 finishes it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import _PAUSE, load_module, prelude, reload_module

from durable import (
    DurableBackend,
    IncompatibleStateError,
    InMemoryStateStore,
    MoveTo,
    PauseForEventException,
    make_durable,
    migration,
)
from durable.runtime.migration import Position

STAYS = "stays"


@dataclass
class Case:
    name: str
    v1: str
    edits: list[tuple[str, str]]
    # v2's result after resuming from each save of a full v1 run: by the point id of the root
    # fiber's top frame ("*": any other), or a list in the order of the saves; STAYS: refused
    expected: dict[str, Any] | list[Any]
    pinned: bool = False
    hook: Any = None  # a migration hook for `main`, registered on v2


CASES: list[Case] = []


def case(name: str, v1: str, edits: list[tuple[str, str]], expected: dict[str, Any] | list[Any],
         **options: Any) -> None:
    CASES.append(Case(name, textwrap.dedent(v1), edits, expected, **options))


# --- edits before and after the point ----------------------------------------------------------
STEP_THEN_PAUSE = """
    async def step(x):
        return x + 1

    async def main():
        a = await step(1)
        PAUSE("go")
        return a * 10
    """

case("statement_inserted_before", STEP_THEN_PAUSE, [("    a = await step(1)\n", "    unused = None\n    a = await step(1)\n")],
    {"*": 20})

case("code_after_changed", STEP_THEN_PAUSE, [("return a * 10", "return a * 100")],
    {"*": 200})

case("await_added_after", """
    async def step(x):
        return x + 1

    async def main():
        a = await step(1)
        PAUSE("go")
        return a
    """, [("    return a\n", "    a = await step(a)\n    return a\n")],
    {"*": 3})

# --- loops: paused at iteration k, the rest runs v2's body --------------------------------------
case("loop_body_changed_after_the_point", """
    async def step(x):
        return x

    async def main():
        total = 0
        for i in range(3):
            total += await step(i)
            PAUSE(f"tick{i}")
        return total
    """, [('        PAUSE(f"tick{i}")\n', '        PAUSE(f"tick{i}")\n        total += 100\n')],
    # saves: start; then per iteration: step(i) done, paused at tick{i}
    [303, 303, 303, 203, 203, 103, 103])

# --- try / except / finally, with --------------------------------------------------------------
case("finally_clause_changed", """
    LOG = []

    async def step(x):
        return x

    async def main():
        try:
            a = await step(1)
            PAUSE("go")
        finally:
            LOG.append("cleanup")
        return a, len(LOG)
    """, [('LOG.append("cleanup")', 'LOG.append("cleanup")\n        LOG.append("twice")')],
    {"*": (1, 2)})

case("exception_handler_changed_after_the_point", """
    async def fail():
        raise ValueError("no")

    async def main():
        try:
            await fail()
        except ValueError as error:
            PAUSE("handled")
            return f"v1 {error}"
    """, [('return f"v1 {error}"', 'return f"v2 {error}"')],
    {"*": "v2 no"})

case("with_body_changed_after_the_point", """
    EXITS = []

    class Held:
        def __enter__(self):
            return "resource"

        def __exit__(self, *exc_info):
            EXITS.append("exit")

    async def step(x):
        return x

    async def main():
        with Held() as r:
            a = await step(1)
            PAUSE("go")
            b = a + 1
        return r, b, len(EXITS)
    """, [("b = a + 1", "b = a + 2")],
    {"*": ("resource", 3, 1)})

# --- callees several frames deep, fan-out branches ---------------------------------------------
case("callees_two_frames_deep_changed_after_their_points", """
    async def inner(x):
        PAUSE("go")
        return x + 1

    async def middle(x):
        y = await inner(x)
        return y * 2

    async def main():
        return await middle(1)
    """, [("return x + 1", "return x + 5"), ("return y * 2", "return y * 3")],
    # saves: start; paused in inner; inner returned 2 (v1); middle returned 4 (v1)
    [18, 18, 6, 4])

case("fan_out_branches_changed_after_their_point", """
    from durable import gather

    async def branch(i):
        PAUSE(f"go{i}")
        return i + 1

    async def main():
        return await gather(branch(0), branch(1))
    """, [("return i + 1", "return i + 10")],
    # saves: start; both branches paused; branch 0 returned 1 (v1), then paused on; both returned
    [[10, 11], [10, 11], [1, 11], [1, 11], [1, 2]])

# --- what stays --------------------------------------------------------------------------------
case("awaited_call_changed", """
    async def step(x, scale=1):
        return x * scale

    async def main():
        a = await step(1)
        PAUSE("go")
        return a
    """, [("a = await step(1)", "a = await step(1, scale=10)")],
    {"<start>": 10, "step(1)#1": STAYS, "*": 1})

case("new_variable_read_after_the_point", """
    async def main():
        price = 10
        PAUSE("go")
        return price
    """, [("    price = 10\n", "    price = 10\n    discount = 1\n"),
          ("return price", "return price - discount")],
    {"<start>": 9, "*": STAYS})

case("identical_await_added_in_the_same_place", """
    async def step(x):
        return x

    async def main():
        a = await step(1)
        b = await step(1)
        PAUSE("go")
        return a + b
    """, [("    b = await step(1)\n", "    b = await step(1)\n    c = await step(1)\n")],
    {"step(1)#1": STAYS, "step(1)#2": STAYS, "*": 2})

case("enclosing_loop_header_changed", """
    async def step(x):
        return x

    async def main():
        total = 0
        for i in range(2):
            total += await step(i)
        return total
    """, [("for i in range(2):", "for i in range(3):")],
    {"<start>": 3, "*": STAYS})

case("pinned_program", """
    async def main():
        a = 1
        PAUSE("go")
        return a
    """, [("return a", "return a + 1")],
    {"*": STAYS}, pinned=True)

# --- hooks and names ---------------------------------------------------------------------------
case("renamed_variable_with_a_hook", """
    async def main():
        count = 5
        PAUSE("go")
        return count
    """, [("count = 5", "n = 5"), ("return count", "return n * 2")],
    {"*": 10},
    hook=lambda old: {"n": old.variables["count"]})

case("renamed_variable_without_a_hook", """
    async def main():
        count = 5
        PAUSE("go")
        return count
    """, [("count = 5", "n = 5"), ("return count", "return n * 2")],
    {"<start>": 10, "*": STAYS})

case("a_hook_that_raises_leaves_the_instance_as_it_was", """
    async def main():
        count = 5
        PAUSE("go")
        return count
    """, [("count = 5", "n = 5"), ("return count", "return n * 2")],
    {"<start>": 10, "*": STAYS},
    hook=lambda old: 1 / 0)

case("named_point_survives_a_changed_await", """
    async def step(x, scale=1):
        return x * scale

    async def main():
        a = await step(1)  # durable: point first
        PAUSE("go")
        return a
    """, [("a = await step(1)  #", "a = await step(1, scale=10)  #")],
    {"<start>": 10, "*": 1})

case("hook_moves_to_a_named_point", """
    async def main():
        a = 1
        PAUSE("go")
        return a
    """, [('PAUSE("go")', 'raise PauseForEventException("ready")  # durable: point ready')],
    {"*": 1},
    hook=lambda old: MoveTo("ready", old.variables))


# --- running a case ----------------------------------------------------------------------------
class Crash(BaseException):
    """Stops a run right after a given save, as if its process died there."""


class Stopping(DurableBackend):
    def __init__(self, store: InMemoryStateStore, crash_at: int | None = None) -> None:
        super().__init__(store)
        self.saves, self.crash_at = 0, crash_at

    async def save_state(self, instance_id: str, state: dict[str, Any]) -> None:
        await super().save_state(instance_id, state)
        self.saves += 1
        if self.saves == self.crash_at:
            raise Crash()


async def to_the_end(program: Any, backend: DurableBackend) -> Any:
    """Run the instance, publishing whatever it waits for, until it returns."""
    while True:
        try:
            return await program(orchestration_backend=backend, instance_id="i")
        except PauseForEventException as pause:
            backend.publish_event("i", pause.event)


class Versions:
    """One module file, switched between v1 and v2 (each imported afresh, as a deploy would)."""

    def __init__(self, c: Case, directory: Path) -> None:
        self.case = c
        self.module = load_module(c.v1, directory, durable=True)
        self.path = Path(self.module.__file__)
        v2 = c.v1
        for old, new in c.edits:
            assert old in v2, (c.name, old)
            v2 = v2.replace(old, new)
        self.texts = {"v1": self.path.read_text(), "v2": prelude(True) + "\n" + _PAUSE.sub(
            r"\1raise PauseForEventException(\2)", v2)}

    def program(self, version: str) -> Any:
        self.path.write_text(self.texts[version])
        module = reload_module(self.module)
        if version == "v2" and self.case.hook is not None:
            migration(module.main)(self.case.hook)
        return make_durable(module.main, migrate=not self.case.pinned)


def top_point(state: dict[str, Any]) -> str:
    """The resume point of the top frame (or "fan-out", while branches exist)."""
    if state["fibers"] is not None:
        return "fan-out"
    return Position.from_json(state["positions"][-1]).point


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
async def test_edit_pair(c: Case, tmp_path) -> None:
    versions = Versions(c, tmp_path)
    full = Stopping(InMemoryStateStore())
    v1_result = await to_the_end(versions.program("v1"), full)
    outcomes = []
    for save in range(1, full.saves):  # every save but the last (the result)
        store = InMemoryStateStore()
        with pytest.raises(Crash):
            await to_the_end(versions.program("v1"), Stopping(store, crash_at=save))
        state = await store.load("i")
        point = top_point(state)
        if isinstance(c.expected, list):
            expected = c.expected[save - 1]
        else:
            expected = c.expected.get(point, c.expected.get("*"))
        backend = DurableBackend(store)
        if expected == STAYS:
            with pytest.raises(IncompatibleStateError, match=r"(changed|pinned)"):
                await to_the_end(versions.program("v2"), backend)
            assert await store.load("i") == state, (c.name, save, point)  # left as it was
            assert await to_the_end(versions.program("v1"), backend) == v1_result
            outcomes.append((point, STAYS))
        else:
            result = await to_the_end(versions.program("v2"), backend)
            outcomes.append((point, result))
            assert result == expected, (c.name, save, point, outcomes)
    assert outcomes, c.name
