"""What a person sees of a waiting or ended instance: plain JSON, kept beside its state.

Written with the save that pauses or ends the instance, so ``durable show``, the
UI and ``Client.summary`` read where it stands (each branch's frames: function,
file, line, the text of that line, the resume point, the variables) without
unpickling anything. Values are bounded reprs (``reprlib``); an object whose repr
raises is shown by its type, and so is every object of a type whose repr once took
longer than ``SLOW_REPR_SECONDS`` in this process. Variables whose names match the
redaction list are shown as ``***``.
"""

from __future__ import annotations

import json
import linecache
import re
import reprlib
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frame import FunctionCall

HIDDEN = "***"
INTERNAL_EVENTS = "durable:"  # the prefix of the events durable publishes itself
SLOW_REPR_SECONDS = 0.01
CONTEXT_LINES = 2  # source lines kept on each side of a frame's line
# Name parts (split at "_", "-" and case changes) that mark a secret.
REDACTED = {"password", "passwd", "pwd", "secret", "token", "key", "credential", "credentials",
            "auth", "authorization", "cookie", "session", "private", "signature", "apikey"}

_slow_types: set[type] = set()
_as_json = json.JSONEncoder(separators=(",", ":")).encode
_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


class _Bounded(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 120
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 10
        self.maxdict = 10
        self.maxlevel = 3

    def repr_instance(self, obj: Any, level: int) -> str:
        """Any object not of a builtin container type: its own repr, bounded, or its type."""
        kind = type(obj)
        if kind in _slow_types:
            return _by_type(obj)
        started = time.perf_counter()
        try:
            text = repr(obj)
        except Exception:
            return _by_type(obj)
        if time.perf_counter() - started > SLOW_REPR_SECONDS:
            _slow_types.add(kind)
        if len(text) > self.maxother:
            half = (self.maxother - 3) // 2
            text = f"{text[:half]}...{text[len(text) - half:]}"
        return text


_BOUNDED = _Bounded()


def bounded_repr(value: Any) -> str:
    try:
        return _BOUNDED.repr(value)
    except Exception:  # a container whose items misbehave
        return _by_type(value)


def _by_type(value: Any) -> str:
    kind = type(value)
    return f"<{kind.__module__}.{kind.__qualname__} object>"


def is_secret(name: str, redacted: Iterable[str] = ()) -> bool:
    """Does a variable's name mark a secret: one of its parts (``api_key`` -> api, key) is in
    ``REDACTED`` or ``redacted``, or the whole name is?"""
    return _named_secret(name, _words(redacted))


def _words(redacted: Iterable[str]) -> set[str]:
    return {*REDACTED, *(word.lower() for word in redacted)}


def _named_secret(name: str, words: set[str]) -> bool:
    parts = {part.lower() for part in _PARTS.findall(name)}
    return bool(parts & words) or name.lower().strip("_") in words


def variables(values: Mapping[str, Any], redacted: Iterable[str] = ()) -> dict[str, str]:
    """Each variable as a person may see it, by name."""
    words = _words(redacted)
    return {name: HIDDEN if _named_secret(name, words) else bounded_repr(value)
            for name, value in sorted(values.items())}


def frame_summary(frame: FunctionCall, redacted: Iterable[str] = ()) -> dict[str, Any]:
    """One frame: where it stands, and every variable it has bound, as a debugger shows them
    (not the compiler's own; one its code no longer reads is not saved, so after a restart it
    may be gone)."""
    function = frame.function
    line = frame.line
    values = {}
    for name, cell in list(frame.cells.items()):
        if name in function.descriptions:
            continue
        try:
            values[name] = cell.cell_contents
        except ValueError:  # not bound
            continue
    position = function.positions.get(frame.pc)
    first = max(1, line - CONTEXT_LINES)
    return {
        "function": function.qualname,
        "file": function.filename,
        "line": line,
        "source": linecache.getline(function.filename, line).rstrip("\n"),
        "context": [first, [linecache.getline(function.filename, number).rstrip("\n")
                            for number in range(first, line + CONTEXT_LINES + 1)]],
        "point": json.loads(position)[2] if position else None,
        "variables": variables(values, redacted),
    }


def instance_summary(branches: Iterable[tuple[str, Iterable[FunctionCall]]], *,
                     redacted: Iterable[str] = (), waiting_for: str | None = None,
                     waiting_events: list[str] | None = None, wake_at: float | None = None,
                     custom_status: Any = None, parent: str | None = None, children: int = 0,
                     outcome: str | None = None, error_traceback: str | None = None) -> str:
    """The summary saved beside a state, as JSON: each branch (``(name, frames)``, the
    outermost frame first) and what the instance waits for, or how it ended."""
    extra = (*redacted, *EVERYWHERE)
    return _as_json({
        "branches": [{"name": name, "frames": [frame_summary(frame, extra) for frame in frames]}
                     for name, frames in branches],
        "waiting_for": waiting_for,
        # Its own events (a cancellation, a child's end) are durable's: not shown.
        "waiting_events": [name for name in waiting_events or ()
                           if not name.startswith(INTERNAL_EVENTS)],
        "wake_at": wake_at,
        "custom_status": None if custom_status is None else bounded_repr(custom_status),
        "parent": parent,
        "children": children,
        "outcome": outcome,  # the result's repr, or the error's type and message
        "traceback": error_traceback,
    })


EVERYWHERE: set[str] = set()  # names redact() added, for every program


def redact(*names: str) -> None:
    """Show variables with these names (or name parts) as ``***`` in every program's summary,
    beside the default list (``REDACTED``) and a program's own (``make_durable(redact=...)``)."""
    EVERYWHERE.update(name.lower() for name in names)
