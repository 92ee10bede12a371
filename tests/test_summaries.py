"""Where an instance stands, for people: the summary saved with each pause and end, and
``durable show``, which prints it without unpickling anything."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from harness import durable_command, running

from durable import Client, Worker, make_durable, set_status, wait_for_event
from durable.runtime import summary as summaries
from durable.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60


# --- bounded reprs and redaction ---------------------------------------------------------------
class Raises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Slow:
    calls = 0

    def __repr__(self) -> str:
        Slow.calls += 1
        import time
        time.sleep(summaries.SLOW_REPR_SECONDS * 2)
        return "Slow()"


def test_values_are_bounded_reprs() -> None:
    long = summaries.bounded_repr("x" * 1000)
    assert long.startswith("'xxx") and "x...x" in long and long.endswith("xxx'")
    assert len(long) <= 120
    assert summaries.bounded_repr(list(range(1000))) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...]"
    assert summaries.bounded_repr({"a": [[[[1]]]]}) == "{'a': [[[...]]]}"
    assert summaries.bounded_repr(Raises()) == "<test_summaries.Raises object>"
    assert summaries.bounded_repr([Raises()]) == "[<test_summaries.Raises object>]"


def test_a_type_with_a_slow_repr_is_shown_by_its_type_from_then_on() -> None:
    assert summaries.bounded_repr(Slow()) == "Slow()"  # measured: slow
    assert summaries.bounded_repr(Slow()) == "<test_summaries.Slow object>"
    assert Slow.calls == 1


@pytest.mark.parametrize("name, secret", [
    ("password", True), ("db_password", True), ("apiKey", True), ("api_key", True),
    ("AUTH_TOKEN", True), ("client_secret", True), ("credentials", True), ("key", True),
    ("monkey", False), ("keys", False), ("total", False), ("tokenizer", False),
])
def test_secret_names(name, secret) -> None:
    assert summaries.is_secret(name) is secret


def test_redaction_extends_per_program_and_everywhere(monkeypatch) -> None:
    monkeypatch.setattr(summaries, "EVERYWHERE", set())
    values = {"iban": "DE89", "ssn": "078-05-1120", "name": "Ada", "token": "t"}
    assert summaries.variables(values) == {"iban": "'DE89'", "name": "'Ada'",
                                           "ssn": "'078-05-1120'", "token": "***"}
    assert summaries.variables(values, ["iban"])["iban"] == "***"
    summaries.redact("ssn")
    assert summaries.instance_summary([]) and "ssn" in summaries.EVERYWHERE


# --- saved with the pause, shown by durable show ---------------------------------------------
# A frame shows the variables it keeps: those its code still reads after the line it stands at.
async def leaf(i: int, token: str) -> int:
    note = f"leaf {i}"
    paid = await wait_for_event(f"go-{i}")
    return paid + len(note) if token else i


async def middle(n: int) -> int:
    try:
        total = 0
        for k in range(n):
            total += await leaf(k, token="s3cret")
        return total
    finally:
        await set_status({"cleaned": True})


async def _outer(n: int) -> int:
    api_key = "abc-123"
    await set_status({"stage": "started", "key_len": len(api_key)})
    result = await middle(n)
    return result if api_key else -n


outer = make_durable(_outer, redact=["note"])


def line_of(text: str, function=middle) -> int:
    import inspect
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, line in enumerate(lines) if text in line)


async def show(cwd: Path, url: str, *args: str) -> tuple[int, str, str]:
    return await durable_command(cwd, "show", *args, "--store", url)


async def test_show_gives_the_stack_three_frames_deep(store_url, tmp_path) -> None:
    store = open_store(store_url)
    client = Client(store)
    try:
        await client.start(outer, 3, instance_id="deep")
        assert await client.summary("deep") is None  # not paused yet
        code, out, _ = await show(tmp_path, store_url, "deep")
        assert code == 0 and "no stack yet" in out
        async with running(Worker(store, [outer], poll_interval=0.05)):
            await client.wait_for_status("deep", "waiting", timeout=TIMEOUT)
            await client.publish_event("deep", "go-0", 10)
            await wait_for_second_pause(client)
            summary = await client.summary("deep")
            frames = summary["branches"][0]["frames"]
            assert [(f["function"], f["line"]) for f in frames] == [
                ("_outer", line_of("await middle", _outer)),
                ("middle", line_of("await leaf")),
                ("leaf", line_of("await wait_for_event", leaf))]
            assert frames[0]["variables"] == {"api_key": "***", "n": "3"}
            # n is not there: the loop no longer reads it, so it was not saved at the first
            # pause, and the instance was loaded again to resume.
            assert frames[1]["variables"] == {"k": "1", "total": "16"}
            assert frames[2]["variables"] == {"i": "1", "note": "***", "token": "***"}
            assert frames[2]["source"].strip() == 'paid = await wait_for_event(f"go-{i}")'
            assert summary["waiting_for"] == "go-1"
            assert summary["custom_status"] == "{'key_len': 7, 'stage': 'started'}"  # reprlib sorts

            code, out, err = await show(tmp_path, store_url, "deep")
            assert code == 0, err
            assert "status    waiting for go-1" in out
            assert f'File "{Path(__file__)}", line {line_of("await leaf")}, in middle' in out
            assert f"   > {line_of('await leaf')} |             total += await leaf" in out
            assert "      total = 16" in out and "      token = ***" in out
            code, out, err = await show(tmp_path, store_url, "deep", "--json")
            assert json.loads(out)["summary"] == summary

            for i in (1, 2):
                await client.publish_event("deep", f"go-{i}", 10)
            assert await client.result("deep", timeout=TIMEOUT) == 48
        summary = await client.summary("deep")
        assert summary["branches"] == [] and summary["outcome"] == "48"
        assert summary["custom_status"] == "{'cleaned': True}"
        code, out, _ = await show(tmp_path, store_url, "deep")
        assert "result    48" in out
    finally:
        await store.close()


async def wait_for_second_pause(client: Client) -> None:
    for _ in range(TIMEOUT * 20):
        info = await client.status("deep")
        if info.status == "waiting" and info.waiting_for == "go-1":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"did not pause at go-1: {info}")


async def _fails() -> None:
    amount = 12
    raise ValueError(f"cannot charge {amount}")


fails = make_durable(_fails)


async def test_a_failed_instance_shows_its_error_and_traceback(store_url, tmp_path) -> None:
    store = open_store(store_url)
    client = Client(store)
    try:
        await client.start(fails, instance_id="f")
        async with running(Worker(store, [fails], poll_interval=0.05)):
            await client.wait_for_status("f", "failed", timeout=TIMEOUT)
        summary = await client.summary("f")
        assert summary["outcome"] == "ValueError: cannot charge 12"
        assert "raise ValueError" in summary["traceback"]
        code, out, _ = await show(tmp_path, store_url, "f")
        assert code == 0 and "ValueError: cannot charge 12" in out and "Traceback" in out
    finally:
        await store.close()
