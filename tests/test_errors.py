"""Every clear error: it names what was wrong and where, and leaves no half-written state."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness import load_module, prelude, reload_module

from durable import (
    Cancelled,
    CompileError,
    DurableBackend,
    IncompatibleStateError,
    InMemoryStateStore,
    PauseForEventException,
    SerializationError,
    UnsupportedPauseError,
    make_durable,
    serialization,
)
from durable.errors import EventTimeout, InstanceTerminated, NotInDurableCode, StepInterrupted


def compile_error(source: str, tmp_path, entry: str = "main") -> CompileError:
    module = load_module(source, tmp_path, durable=True)
    with pytest.raises(CompileError) as caught:
        make_durable(getattr(module, entry))
    return caught.value


def line_of(source: str, fragment: str) -> int:
    """File line of ``fragment`` in a module written by ``load_module``."""
    prelude_lines = len((prelude(True) + "\n").splitlines())
    for number, text in enumerate(textwrap.dedent(source).splitlines(), start=1):
        if fragment in text:
            return prelude_lines + number
    raise AssertionError(fragment)


REJECTED = {
    "yield": ("""
        async def main():
            await nd(1)
            yield 2
        """, "yield 2", "`yield`"),
    "async generator expression": ("""
        async def main():
            return sum(await nd(x) for x in range(3))
        """, "sum(await", "generator expression"),
    "except star": ("""
        async def main():
            try:
                await nd(1)
            except* ValueError:
                pass
        """, "try:", "except*"),
    "await in except type": ("""
        async def main():
            try:
                pass
            except (await nd(ValueError)):
                pass
        """, "except (await", "exception type"),
    "locals": ("""
        async def main():
            x = await nd(1)
            return locals()
        """, "return locals()", "locals()"),
    "eval without namespace": ("""
        async def main():
            x = await nd(1)
            return eval("x + 1")
        """, "eval(", "eval()"),
    "await in default of nested function": ("""
        async def main():
            def inner(x=await nd(1)):
                return x
            return inner()
        """, "def inner", "default value"),
    "self-documenting f-string": ("""
        async def main():
            return f"{await nd(1)=}"
        """, "return f", "{expr=}"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_construct_names_construct_function_and_line(name: str, tmp_path) -> None:
    source, fragment, construct = REJECTED[name]
    error = compile_error(source, tmp_path)
    assert construct in str(error)
    assert error.function == "main"
    assert error.lineno == line_of(source, fragment)
    assert error.filename.endswith(".py")
    assert f"line {error.lineno}" in str(error)


def test_nonlocal_in_a_durable_function_is_rejected(tmp_path) -> None:
    source = """
    def outer():
        count = 0
        async def main():
            nonlocal count
            count += await nd(1)
        return main
    """
    module = load_module(source, tmp_path, durable=True)
    with pytest.raises(CompileError, match=r"`nonlocal count`") as caught:
        make_durable(module.outer())
    assert caught.value.lineno == line_of(source, "nonlocal count")
    assert caught.value.function == "outer.<locals>.main"


def test_awaited_helper_is_checked_when_make_durable_is_called(tmp_path) -> None:
    source = """
    async def helper():
        return locals()

    async def main():
        return await helper()
    """
    error = compile_error(source, tmp_path)
    assert error.function == "helper"
    assert error.lineno == line_of(source, "return locals()")


@pytest.mark.parametrize("target", [len, lambda: 1, print])
def test_make_durable_needs_an_async_function(target) -> None:
    with pytest.raises(TypeError, match="needs an `async def` function"):
        make_durable(target)


def test_a_sync_def_is_refused(tmp_path) -> None:
    module = load_module("def main():\n    return 1\n", tmp_path, durable=True)
    with pytest.raises(TypeError, match=r"main \(function\)"):
        make_durable(module.main)


def test_function_without_source_is_refused() -> None:
    namespace: dict = {}
    exec("async def main():\n    return 1\n", namespace)
    with pytest.raises(CompileError, match="cannot read the source of main"):
        make_durable(namespace["main"])


# --- state that cannot be saved ------------------------------------------------------------------
UNSAVEABLE = """
import threading

async def main():
    counter = 0
    counter += await nd(1)
    PAUSE("first")
    lock = threading.Lock()
    counter += await nd(2)
    PAUSE("second")
    return counter, lock.locked()
"""


async def test_unsaveable_local_is_named_and_nothing_is_saved(tmp_path) -> None:
    module = load_module(UNSAVEABLE, tmp_path, durable=True)
    program = make_durable(module.main)
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    with pytest.raises(PauseForEventException):
        await program(orchestration_backend=backend, instance_id="i")
    saved = await store.load("i")
    backend.publish_event("i", "first")
    with pytest.raises(SerializationError) as caught:
        await program(orchestration_backend=backend, instance_id="i")
    error = caught.value
    assert error.variable == "lock"
    assert error.type_name == "lock"
    assert error.function == "main"
    message = str(error)
    assert "local `lock`" in message and "main()" in message
    # nd() is a durable call: the state is saved when it returns, with the lock alive.
    assert f"line {line_of(UNSAVEABLE, 'counter += await nd(2)')}" in message
    # Nothing half-written: the store holds exactly the state saved at the first pause.
    assert await store.load("i") == saved


async def test_dead_unsaveable_local_is_not_saved(tmp_path) -> None:
    source = """
    async def main(path):
        handle = open(path)
        text = handle.read()
        handle.close()
        PAUSE("go")
        return text
    """
    (tmp_path / "data.txt").write_text("content")
    module = load_module(source, tmp_path, durable=True)
    program = make_durable(module.main)
    backend = DurableBackend(InMemoryStateStore())
    with pytest.raises(PauseForEventException):
        await program(str(tmp_path / "data.txt"), orchestration_backend=backend, instance_id="i")
    backend.publish_event("i", "go")
    assert await program(orchestration_backend=backend, instance_id="i") == "content"


async def test_unsaveable_result_is_named(tmp_path) -> None:
    module = load_module("""
    import threading

    async def main():
        await nd(1)
        return threading.Lock()
    """, tmp_path, durable=True)
    program = make_durable(module.main)
    with pytest.raises(SerializationError, match=r"main\(\) returned a lock"):
        await program(orchestration_backend=DurableBackend(), instance_id="i")


# --- code that changed ----------------------------------------------------------------------------
async def resume_after_edit(source: str, old: str, new: str, directory: Path) -> Any:
    """Pause ``main`` at its "wait" event, replace ``old`` by ``new`` in the file, then resume."""
    module = load_module(source, directory, durable=True)
    backend = DurableBackend(InMemoryStateStore())
    with pytest.raises(PauseForEventException):
        await make_durable(module.main)(orchestration_backend=backend, instance_id="i")
    path = directory / f"{module.__name__}.py"
    path.write_text(path.read_text().replace(old, new))
    module = reload_module(module)
    backend.publish_event("i", "wait")
    return await make_durable(module.main)(orchestration_backend=backend, instance_id="i")


STEP_THEN_RETURN = """
    async def step(x):
        PAUSE("wait")
        return x + 1

    async def main():
        return await step(1)
    """


async def test_a_change_after_the_resume_point_moves_the_frame_onto_the_new_code(tmp_path) -> None:
    assert await resume_after_edit(STEP_THEN_RETURN, "return x + 1", "return x + 2", tmp_path) == 3


async def test_a_removed_resume_point_is_refused_naming_the_function_and_the_point(tmp_path) -> None:
    with pytest.raises(IncompatibleStateError, match=r"code of step\(\)") as caught:
        await resume_after_edit(STEP_THEN_RETURN, 'Exception("wait")', 'Exception("later")',
                                tmp_path)
    assert caught.value.function == "step"
    assert re.search(r"the resume point `raise PauseForEventException\('wait'\)#1` \(line \d+\) "
                     r"no longer exists in step\(\)", str(caught.value))


async def test_comments_and_layout_changes_are_not_code_changes(tmp_path) -> None:
    source = """
    async def main():
        PAUSE("wait")
        return 1
    """
    assert await resume_after_edit(source, "return 1", "return (1)  # the answer", tmp_path) == 1


async def test_instance_of_another_program_is_refused(tmp_path) -> None:
    module = load_module("""
    async def first():
        PAUSE("wait")

    async def second():
        return 2
    """, tmp_path, durable=True)
    backend = DurableBackend(InMemoryStateStore())
    with pytest.raises(PauseForEventException):
        await make_durable(module.first)(orchestration_backend=backend, instance_id="i")
    with pytest.raises(IncompatibleStateError, match=re.escape(f"{module.__name__}:first")):
        await make_durable(module.second)(orchestration_backend=backend, instance_id="i")


def test_asyncio_run_accepts_a_program_call(tmp_path) -> None:
    module = load_module("async def main(x):\n    return await nd(x)\n", tmp_path, durable=True)
    assert asyncio.run(make_durable(module.main)(5)) == 5


async def test_pause_raised_by_a_plain_helper_is_refused_naming_it(tmp_path) -> None:
    source = """
    def require(event):
        raise PauseForEventException(event)

    async def main():
        await nd(1)
        require("go")
        return "done"
    """
    module = load_module(source, tmp_path, durable=True)
    program = make_durable(module.main)
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    with pytest.raises(UnsupportedPauseError) as caught:
        await program(orchestration_backend=backend, instance_id="i")
    assert caught.value.event == "go"
    assert f"require() ({module.__file__}, line {line_of(source, 'raise PauseForEventException')})" in str(caught.value)
    saved = await store.load("i")
    assert saved["status"] == "running"  # left at its last save, nothing half-written
    with pytest.raises(UnsupportedPauseError):
        await program(orchestration_backend=backend, instance_id="i")


async def test_pause_in_an_awaited_async_helper_works(tmp_path) -> None:
    module = load_module("""
    async def require(event):
        raise PauseForEventException(event) from None

    async def main():
        await require("go")
        return "done"
    """, tmp_path, durable=True)
    program = make_durable(module.main)
    backend = DurableBackend(InMemoryStateStore())
    with pytest.raises(PauseForEventException):
        await program(orchestration_backend=backend, instance_id="i")
    backend.publish_event("i", "go")
    assert await program(orchestration_backend=backend, instance_id="i") == "done"


async def test_state_that_cannot_be_loaded_is_refused_clearly(tmp_path) -> None:
    module = load_module("""
    async def main():
        PAUSE("wait")
        return 1
    """, tmp_path, durable=True)
    program = make_durable(module.main)
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    with pytest.raises(PauseForEventException):
        await program(orchestration_backend=backend, instance_id="i")
    state = await store.load("i")
    await store.save("i", dict(state, frames=[b"not a pickle"], python="3.99"))
    backend.publish_event("i", "wait")
    with pytest.raises(IncompatibleStateError, match=r"cannot load the saved state of instance 'i'.*"
                       r"saved by Python 3\.99"):
        await program(orchestration_backend=backend, instance_id="i")


@pytest.mark.parametrize("error", [
    Cancelled("s1", "customer asked"), Cancelled("s1"), NotInDurableCode("sleep()"),
    InstanceTerminated("t1", "not needed"), EventTimeout("paid", 5), StepInterrupted("charge", 2),
], ids=repr)
def test_library_errors_come_back_from_a_save_with_their_own_message(error) -> None:
    """An instance's error is saved and rebuilt: ``Cancelled(message)`` must not nest the
    message in a new one (``instance "instance 's1' was cancelled: ..." was cancelled``)."""
    again = serialization.loads(serialization.dumps(error))
    assert (type(again), str(again), again.args) == (type(error), str(error), error.args)
    assert vars(again) == vars(error)
