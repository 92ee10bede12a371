"""Errors raised in durable code show the user's own file, line and function."""

from __future__ import annotations

import traceback

import pytest
from harness import load_module

from durable import DurableBackend, InMemoryStateStore, PauseForEventException, make_durable

SOURCE = """
async def leaf(x):
    await nd(x)
    y = 10 / x
    return y

async def middle(x):
    return await leaf(x)

async def main(x):
    PAUSE("start")
    value = await middle(x)
    return value
"""


def user_frames(error: BaseException, filename: str) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(error.__traceback__)
    first = next(i for i, f in enumerate(frames) if f.filename == filename)
    tail = frames[first:]
    assert all(f.filename == filename for f in tail), [f.filename for f in tail]
    return tail


async def plain_error(module) -> BaseException:
    try:
        await module.main(0)
    except ZeroDivisionError as error:
        return error
    raise AssertionError("no error")


@pytest.mark.parametrize("restart", [False, True])
async def test_traceback_points_at_user_lines(tmp_path, restart: bool) -> None:
    plain = load_module(SOURCE, tmp_path, durable=False)
    expected = user_frames(await plain_error(plain), plain.__file__)
    module = load_module(SOURCE, tmp_path, durable=True)
    program = make_durable(module.main)
    store = InMemoryStateStore()
    backend = DurableBackend(store)
    with pytest.raises(PauseForEventException):
        await program(0, orchestration_backend=backend, instance_id="i")
    backend.publish_event("i", "start")
    if restart:
        backend = DurableBackend(store)
    with pytest.raises(ZeroDivisionError) as caught:
        await program(orchestration_backend=backend, instance_id="i")
    frames = user_frames(caught.value, module.__file__)
    assert [(f.lineno, f.name) for f in frames] == [(f.lineno, f.name) for f in expected]
    assert [f.line for f in frames] == [f.line for f in expected]
    # The division is an unchanged line: the caret columns are Python's own.
    assert (frames[-1].colno, frames[-1].end_colno) == (expected[-1].colno, expected[-1].end_colno)


async def test_stored_error_carries_the_original_traceback(tmp_path) -> None:
    module = load_module(SOURCE, tmp_path, durable=True)
    program = make_durable(module.main)
    backend = DurableBackend(InMemoryStateStore())
    with pytest.raises(PauseForEventException):
        await program(0, orchestration_backend=backend, instance_id="i")
    backend.publish_event("i", "start")
    with pytest.raises(ZeroDivisionError):
        await program(orchestration_backend=backend, instance_id="i")
    with pytest.raises(ZeroDivisionError, match="division by zero") as again:
        await program(orchestration_backend=backend, instance_id="i")
    notes = "\n".join(getattr(again.value, "__notes__", []))
    assert "Traceback of the run that failed" in notes
    assert f'{module.__file__}", line' in notes and "y = 10 / x" in notes


UNBOUND_IN_NATIVE_TRY = """
async def main():
    x = await nd(1)
    del x
    try:
        print(x)
    except UnboundLocalError as error:
        return error
"""


async def test_unbound_local_in_a_native_try_points_at_the_read(tmp_path) -> None:
    """The error is converted before the handlers run: its traceback ends at the line that
    read the variable (after one entry for the ``try`` line, where the conversion raised it)."""
    module = load_module(UNBOUND_IN_NATIVE_TRY, tmp_path, durable=True)
    error = await make_durable(module.main)(
        orchestration_backend=DurableBackend(InMemoryStateStore()), instance_id="i")
    assert type(error) is UnboundLocalError
    frames = traceback.extract_tb(error.__traceback__)
    assert [(f.line, f.name) for f in frames] == [("try:", "main"), ("print(x)", "main")]
    assert (frames[-1].colno, frames[-1].end_colno) == (14, 15)  # the caret under x
