"""Moving a saved frame onto a changed version of its function, when that is sound.

A frame stands at a resume point (see ``compiler.points``). Another version of
its function takes the frame over when the point still exists there (the same
id, as many points sharing its place, so ``#2`` means the same await) and
every variable the new code may read from there on was saved: the user's by
name, the compiler's (loop iterators, entered context managers, pending
``finally`` completions, values spilled before the await) by role. What the
rule refuses, a migration hook registered for the function may supply. Else
the frame stays on its own code: the instance waits, intact, for a worker that
has it.

``plan`` decides from the saved metadata alone (``durable check`` uses it
without loading any state); ``move`` applies it to a loaded frame.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from ..errors import IncompatibleStateError
from .actions import JUMP
from .code import CompiledFunction, ResumePoint

logger = logging.getLogger("durable.migration")
PINNED = "its program is pinned to the code it started with (make_durable(..., migrate=False))"


@dataclass(frozen=True)
class Position:
    """Where a saved frame stands, as it saved it: from its state, or from a store's metadata."""

    function: str  # module:qualname
    fingerprint: str
    point: str
    count: int
    line: int
    owners: tuple[str, ...]
    variables: tuple[str, ...]
    roles: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, function: str, fingerprint: str, point: ResumePoint) -> Position:
        """Where a frame of the function ``function`` (with ``fingerprint``) at ``point`` stands."""
        return cls(function, fingerprint, point.id, point.count, point.line, point.owners,
                   point.variables, point.roles)

    def to_json(self) -> str:
        """Compact: every save carries one per frame."""
        return json.dumps([self.function, self.fingerprint, self.point, self.count, self.line,
                           self.owners, self.variables, self.roles], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Position:
        return cls.from_list(json.loads(text))

    @classmethod
    def from_list(cls, fields: list[Any]) -> Position:
        """From ``to_json``'s list, parsed."""
        function, fingerprint, point, count, line, owners, variables, roles = fields
        return cls(function, fingerprint, point, count, line, tuple(owners), tuple(variables),
                   tuple(map(tuple, roles)))

    @property
    def where(self) -> str:
        """The point as a person reads it."""
        return f"`{self.point}` (line {self.line})"


@dataclass(frozen=True)
class Move:
    """How a frame moves: to which block of the new code, renaming the compiler's variables."""

    pc: int
    line: int
    renames: dict[str, str]  # the compiler's variables: old name -> new name
    variables: tuple[str, ...]  # the user's variables the new code keeps


class CannotMove(Exception):
    """The frame cannot move onto the new code; the message says why, for people."""


@dataclass(frozen=True)
class OldFrame:
    """What a migration hook is given: where the frame stood in the old code, and its variables."""

    function: str  # qualname
    point: str  # the resume point's id (or name)
    line: int
    variables: dict[str, Any]


@dataclass(frozen=True)
class MoveTo:
    """What a migration hook may return to move the frame to another resume point."""

    point: str
    variables: dict[str, Any]


Hook = Callable[[OldFrame], "dict[str, Any] | MoveTo"]
_hooks: dict[str, Hook] = {}


def migration(function: Any) -> Callable[[Hook], Hook]:
    """Register a hook that moves saved frames of ``function`` (an ``async def`` or a durable
    program) onto its current code when the automatic rule refuses::

        @migration(checkout)
        def from_v1(old: OldFrame) -> dict:
            return {**old.variables, "discount": 0}

    The hook gets the old frame and returns its variables for the new code (or ``MoveTo``, to
    resume at another point). An error in it leaves the instance where it was, intact."""
    target = getattr(function, "fn", function)
    code = getattr(target, "__code__", None)
    if code is None:
        raise TypeError(f"migration() takes a durable function, got {function!r}")
    key = f"{target.__module__}:{code.co_qualname}"

    def register(hook: Hook) -> Hook:
        _hooks[key] = hook
        return hook
    return register


def hook_for(key: str) -> Hook | None:
    return _hooks.get(key)


def plan(position: Position, function: CompiledFunction, point: str | None = None,
         supplied: Collection[str] | None = None) -> Move:
    """How the frame at ``position`` moves onto ``function``; raises ``CannotMove``. Reads
    metadata only. A hook may choose another ``point`` and supply the user's variables."""
    target = point or position.point
    pc = function.points.get(target)
    if pc is None:
        what = f"resume point `{target}`" if point else f"the resume point {position.where}"
        raise CannotMove(f"{what} no longer exists in {function.qualname}()")
    new = function.blocks[pc].point
    assert new is not None
    if point is None and new.count != position.count:
        raise CannotMove(
            f"{position.where} is ambiguous: its place now has {new.count} such points where it "
            f"had {position.count}; name it (# durable: point NAME) to move it")
    renames = _renames(position, new.owners, new.roles, function)
    needed = sorted(set(new.variables) - set(position.variables if supplied is None else supplied))
    if needed:
        by = "was not saved" if supplied is None else "the migration hook did not supply"
        raise CannotMove(f"the new code needs variable `{needed[0]}` at `{target}`, which {by}")
    return Move(pc, new.line, renames, new.variables)


def _renames(position: Position, owners: tuple[str, ...], roles: tuple[tuple[str, str], ...],
             function: CompiledFunction) -> dict[str, str]:
    """The compiler's variables of the new point, found among the saved ones by role."""
    saved = {role: name for name, role in position.roles}
    renames = {}
    for name, role in roles:
        depth = int(role.split(":", 1)[0])
        if position.owners[:depth + 1] != owners[:depth + 1]:
            old = position.owners[depth] if depth < len(position.owners) else "nothing"
            raise CannotMove(f"the code around {position.where} changed: `{owners[depth]}` "
                             f"was `{old}`")
        if role not in saved:
            raise CannotMove(f"the new code needs {function.describe(name)} at {position.where}, "
                             "which the old code did not save")
        renames[saved[role]] = name
    return renames


def move(position: Position, function: CompiledFunction, values: dict[str, Any],
         instance_id: str) -> tuple[int, dict[str, Any]]:
    """Move a loaded frame onto ``function``: its new pc and variables; raises ``CannotMove``."""
    hook = hook_for(position.function)
    try:
        decided = plan(position, function)
        user = {name: values[name] for name in decided.variables if name in values}
    except CannotMove:
        if hook is None:
            raise
        decided, user = _hooked(hook, position, function, values)
    moved = dict(user)
    for old, new in decided.renames.items():
        if old in values:
            value = values[old]
            if isinstance(value, tuple) and value and value[0] == JUMP:
                raise CannotMove(f"a `break` or `continue` is pending in a `finally` clause at "
                                 f"{position.where}: its target is a block of the old code")
            moved[new] = value
    logger.info("instance %s: %s() moved from %s:%d to %s:%d", instance_id, function.qualname,
                function.filename, position.line, function.filename, decided.line)
    return decided.pc, moved


def _hooked(hook: Hook, position: Position, function: CompiledFunction,
            values: dict[str, Any]) -> tuple[Move, dict[str, Any]]:
    old = OldFrame(function.qualname, position.point, position.line,
                   {name: values[name] for name in position.variables if name in values})
    try:
        answer = hook(old)
    except Exception as error:
        raise HookFailed(function.qualname, error) from error
    point, variables = (answer.point, answer.variables) if isinstance(answer, MoveTo) else (None, answer)
    if not isinstance(variables, dict):
        raise CannotMove(f"the migration hook of {function.qualname}() returned "
                         f"{type(variables).__name__}, not a dict of variables or a MoveTo")
    decided = plan(position, function, point, supplied=variables)
    return decided, {name: variables[name] for name in decided.variables if name in variables}


class HookFailed(CannotMove):
    """A migration hook raised: the instance is left as it was, with the hook's traceback."""

    def __init__(self, function: str, error: Exception) -> None:
        text = "".join(traceback.format_exception(error)).rstrip()
        super().__init__(f"the migration hook of {function}() raised {type(error).__name__}: "
                         f"{error}\n{text}")


class Restoring:
    """How one load restores frames: for which instance, whether they may move, and where
    each stood (the state's ``positions``, one per frame in the order frames are restored)."""

    def __init__(self, instance_id: str, migrate: bool = True,
                 positions: list[str] | None = None) -> None:
        self.instance_id = instance_id
        self.migrate = migrate
        self._positions = positions
        self._next = 0
        self.moved: list[tuple[str, int, int]] = []  # (function, old line, new line) per move

    def next_position(self) -> str | None:
        """Where the next frame restored stood, as JSON (None if the state did not record
        it): read only if the frame has to move."""
        if self._positions is None:
            return None
        if self._next >= len(self._positions):
            raise IncompatibleStateError(
                f"instance {self.instance_id!r}: its state records {len(self._positions)} "
                "frame positions, fewer than it has frames")
        self._next += 1
        return self._positions[self._next - 1]
