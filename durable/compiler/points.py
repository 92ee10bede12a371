"""Name the resume points, so that a saved frame finds its place again in edited code.

A point's id is its *place* (the loops, ``try``, ``with`` and ``match`` around
it, each with the part it is in, and the code it awaits) and its number among
the points of that place, in source order::

    for item in order.items/try:body/charge(order, item)#2

Statements inserted or removed before or after it, other awaits, comments and
layout leave the id as it was; changing an enclosing loop's header, or the
awaited call, does not. A comment on the point's line names it for good
(``await charge(order)  # durable: point charge``): the name survives any
restructuring. Each point also lists the variables a frame standing there may
hold: the user's by name, the compiler's by role (see ``emitter.Owner``).
A frame that has not run yet stands at ``<start>``.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections import Counter

from ..errors import CompileError
from ..runtime.code import ResumePoint
from .emitter import Block, Made, Suspension
from .source import FunctionSource

START = "<start>"  # where a frame that has not run yet stands: its arguments are its variables
_NAMED = re.compile(r"#\s*durable:\s*point\s+(?P<name>[A-Za-z_][\w.-]*)\s*$")


def resume_points(blocks: list[Block], live: dict[int, frozenset[str]], made: dict[str, Made],
                  source: FunctionSource) -> dict[int, ResumePoint]:
    """The resume point of every block a frame can resume at, by pc."""
    suspensions = {block.pc: block.suspension for block in blocks if block.suspension is not None}
    names = _names(source, Counter(s.line for s in suspensions.values()))
    places = Counter(s.place for s in suspensions.values())
    seen: Counter[str] = Counter()
    points = {0: ResumePoint(id=START, count=1, line=source.line_of(source.function), owners=(),
                             variables=tuple(sorted(v for v in live[0] if v not in made)),
                             roles=())}
    for pc, suspension in suspensions.items():
        seen[suspension.place] += 1
        name = names.get(suspension.line)
        points[pc] = ResumePoint(
            id=name or f"{suspension.place}#{seen[suspension.place]}",
            count=1 if name else places[suspension.place],
            line=suspension.line, owners=suspension.labels,
            variables=tuple(sorted(v for v in live[pc] if v not in made)),
            roles=_roles(suspension, live[pc], made))
    return points


def _roles(suspension: Suspension, live: frozenset[str], made: dict[str, Made]) -> tuple[tuple[str, str], ...]:
    """The compiler's variables a frame standing at ``suspension`` holds, with their roles.

    Only those its owners made: the others are only ever read after the
    statement or construct that made them writes them again (the liveness
    analysis, being conservative, may still list them).
    """
    roles = []
    for variable in sorted(live):
        maker = made.get(variable)
        if maker is not None and maker.owner in suspension.owners:
            depth = suspension.owners.index(maker.owner)
            roles.append((variable, f"{depth}:{maker.part}:{maker.number}:{maker.holds}"))
    return tuple(roles)


def _names(source: FunctionSource, points_on: Counter[int]) -> dict[int, str]:
    """File line -> the name a ``# durable: point NAME`` comment on it gives its resume point."""
    found: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source.text).readline):
        if token.type != tokenize.COMMENT or not (match := _NAMED.search(token.string)):
            continue
        line, name = token.start[0] + source.first_line - 1, match["name"]
        if points_on[line] != 1:
            what = "no await or pause" if not points_on[line] else "more than one resume point"
            raise _error(source, line, f"`# durable: point {name}` is on line {line}, which has "
                                       f"{what}: a name needs a line with exactly one")
        if name in found.values():
            raise _error(source, line, f"two resume points are named {name!r}")
        found[line] = name
    return found


def _error(source: FunctionSource, line: int, message: str) -> CompileError:
    return CompileError(message, function=source.qualname, filename=source.filename, lineno=line)
