"""``durable show``: an instance for a person, like a debugger's backtrace.

Everything comes from the summary its last pause or end saved (``runtime.summary``)
and the store's columns: nothing is unpickled, no user code runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .stores.base import HistoryEntry


def stack_lines(summary: dict[str, Any]) -> list[str]:
    """Each branch's frames, the outermost first, each with its lines around the one it
    stands at (marked ``>``) and its variables."""
    lines: list[str] = []
    for branch in summary.get("branches", []):
        lines.append(f"{branch['name']} (most recent call last):")
        for frame in branch["frames"]:
            lines.append(f'  File "{frame["file"]}", line {frame["line"]}, in {frame["function"]}')
            first, texts = frame["context"]
            width = len(str(first + len(texts) - 1))
            for number, text in enumerate(texts, first):
                mark = ">" if number == frame["line"] else " "
                lines.append(f"   {mark} {number:>{width}} | {text}".rstrip())
            names = frame["variables"]
            pad = max((len(name) for name in names), default=0)
            lines += [f"      {name:<{pad}} = {value}" for name, value in names.items()]
    return lines


def outcome_lines(summary: dict[str, Any]) -> list[str]:
    """How it ended: the result, or the error and its traceback."""
    lines: list[str] = []
    if summary.get("traceback"):
        lines += ["", summary["traceback"].rstrip()]
    elif summary.get("outcome") is not None:
        lines.append(f"result    {summary['outcome']}")
    return lines


def about_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows beside the columns: custom status, parent and children."""
    rows = []
    if summary.get("custom_status") is not None:
        rows.append(("custom", summary["custom_status"]))
    if summary.get("parent"):
        rows.append(("parent", summary["parent"]))
    if summary.get("children"):
        rows.append(("children", str(summary["children"])))
    if len(summary.get("waiting_events") or []) > 1:
        rows.append(("waits for", ", ".join(summary["waiting_events"])))
    return rows


TIMES = ("until", "retry_at", "due")  # data that are times, in seconds since the epoch


def entry_line(entry: HistoryEntry, time_text: Callable[[float], str]) -> str:
    """One history entry on one line: when, what, and its data as ``name=value``."""
    details = ", ".join(
        f"{name}={time_text(value) if name in TIMES and isinstance(value, float) else value}"
        for name, value in entry.data.items() if value is not None and name != "traceback")
    return (f"{entry.number:>6}  {time_text(entry.at)}  {entry.kind}"
            + (f": {details}" if details else ""))
