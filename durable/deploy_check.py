"""Before a deploy: can every unfinished instance run on the code this process has?

For each frame of each unfinished instance, from the metadata the store keeps
beside the state (``positions``, see ``migration.Position``): its code is
unchanged, or it will move (old line -> new line), or a migration hook will
decide, or it cannot move and why. No state is loaded and no instance code
runs: only the current code is compiled, to compare with.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

from .compiler.registry import current
from .errors import IncompatibleStateError
from .program import DurableProgram
from .runtime.migration import PINNED, CannotMove, Position, hook_for, plan
from .stores.base import InstanceStore

UNCHANGED, MOVES, HOOK, STAYS = "unchanged", "moves", "hook", "stays"


@dataclass(frozen=True)
class FrameCheck:
    """One saved frame against the current code."""

    function: str  # qualname
    point: str  # where it stands
    old_line: int
    outcome: str  # UNCHANGED, MOVES, HOOK (a migration hook decides) or STAYS
    new_line: int | None = None
    reason: str | None = None  # why it stays, or why the hook is needed

    @property
    def runs(self) -> bool:
        return self.outcome != STAYS


@dataclass(frozen=True)
class InstanceCheck:
    """One unfinished instance: it runs on the current code if every frame does."""

    instance_id: str
    program: str
    status: str
    frames: tuple[FrameCheck, ...]

    @property
    def runs(self) -> bool:
        return all(frame.runs for frame in self.frames)

    def as_dict(self) -> dict[str, object]:
        return {"instance_id": self.instance_id, "program": self.program, "status": self.status,
                "runs": self.runs, "frames": [frame.__dict__ for frame in self.frames]}


async def check(store: InstanceStore, programs: Collection[DurableProgram]) -> list[InstanceCheck]:
    """Every unfinished instance of ``programs``, checked against the code they have now."""
    pinned = {program.key for program in programs if not program.migrate}
    rows = await store.unfinished([program.key for program in programs])
    checked: dict[tuple[Position, bool], FrameCheck] = {}  # equal frames are checked once
    found = []
    for instance_id, program, status, positions in rows:
        if positions is None:
            frames: tuple[FrameCheck, ...] = (FrameCheck(
                program, "?", 0, STAYS, reason="saved by a release of durable that did not record "
                "where its frames stand: it runs only if its code is unchanged"),)
        else:
            frames = tuple(_frame(Position.from_list(fields), program in pinned, checked)
                           for fields in json.loads(positions))
        found.append(InstanceCheck(instance_id, program, status, frames))
    return found


def _frame(position: Position, pinned: bool,
           checked: dict[tuple[Position, bool], FrameCheck]) -> FrameCheck:
    found = checked.get((position, pinned))
    if found is None:
        found = checked[(position, pinned)] = _check_frame(position, pinned)
    return found


def _check_frame(position: Position, pinned: bool) -> FrameCheck:
    def outcome(kind: str, new_line: int | None = None, reason: str | None = None) -> FrameCheck:
        return FrameCheck(position.function.partition(":")[2], position.point, position.line,
                          kind, new_line, reason)
    try:
        function = current(position.function)
    except IncompatibleStateError as error:
        return outcome(STAYS, reason=str(error))
    if function.fingerprint == position.fingerprint:
        return outcome(UNCHANGED, position.line)
    if pinned:
        return outcome(STAYS, reason=f"its code changed and {PINNED}")
    try:
        move = plan(position, function)
    except CannotMove as error:
        return outcome(HOOK if hook_for(position.function) is not None else STAYS,
                       reason=str(error))
    return outcome(MOVES, move.line)
