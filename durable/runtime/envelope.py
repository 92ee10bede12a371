"""The saved state of one instance: a plain, versioned dict that any store can keep."""

from __future__ import annotations

import sys
import time
from typing import Any

from ..errors import IncompatibleStateError
from ..version import __version__

FORMAT = 2  # 2: frames keep the primitive they await; wake_at
RUNNING = "running"
PAUSED = "paused"
COMPLETED = "completed"
FAILED = "failed"
TERMINATED = "terminated"  # set by a store when a client terminates the instance

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def envelope(program: str, status: str, frames: list[bytes], *, saves: int,
             waiting_for: str | None = None, wake_at: float | None = None,
             waiting_events: list[str] | None = None, fibers: bytes | None = None,
             custom_status: Any = None, parent: str | None = None, children: int = 0,
             result: bytes | None = None,
             error_traceback: str | None = None, consumed_events: list[str] | None = None,
             positions: list[str] | None = None, summary: str | None = None,
             history: list[Any] | None = None, recorded: int = 0) -> dict[str, Any]:
    """Everything about an instance; the frames and the result are already pickled. The lists
    passed in become the envelope's own (not copied: an instance saves after every call)."""
    state = {
        "format": FORMAT,
        "library": __version__,
        "python": PYTHON,
        "program": program,
        "status": status,
        "waiting_for": waiting_for,  # the first event waited for (several, with branches)
        "waiting_events": [] if waiting_events is None else waiting_events,
        "wake_at": wake_at,  # a paused instance resumes by itself then (seconds since the epoch)
        "frames": frames,
        "fibers": fibers,  # while branches run: every fiber's frames, in one pickle
        "result": result,
        "error_traceback": error_traceback,
        "consumed_events": [] if consumed_events is None else consumed_events,
        "saves": saves,
        "custom_status": custom_status,  # set_status()
        "parent": parent,  # the instance that started this one
        "children": children,  # children started with a default id
        "positions": positions,  # where each frame stands, as JSON (migration.Position)
        "updated_at": time.time(),
    }
    # Only when there are any (most saves are of a running instance that recorded nothing):
    if summary is not None:  # at a pause or the end, what a person sees (summary.py), as JSON
        state["summary"] = summary
    if history:  # history entries recorded since the last save (durable.history)
        state["history"] = history
    if recorded:  # history entries recorded since the instance started
        state["recorded"] = recorded
    return state


def check(state: dict[str, Any], program: str, instance_id: str) -> None:
    """Refuse state this code cannot continue, saying why."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise IncompatibleStateError(
            f"instance {instance_id!r}: saved state has format {_field(state, 'format')}, "
            f"this version of durable reads format {FORMAT}"
        )
    if state["program"] != program:
        raise IncompatibleStateError(
            f"instance {instance_id!r} belongs to {state['program']}, not to {program}",
            function=program,
        )


def python_note(state: dict[str, Any]) -> str:
    if state.get("python") == PYTHON:
        return ""
    return f" (it was saved by Python {state.get('python')}, this is Python {PYTHON})"


def _field(state: Any, name: str) -> Any:
    return state.get(name) if isinstance(state, dict) else None
