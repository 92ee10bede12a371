"""What the compiler hands the runtime: a function's code blocks and their tables."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import libcst as cst


@dataclass(frozen=True)
class ResumePoint:
    """A place a saved frame can stand, named so that a changed version of the function can
    find it again (see ``compiler.points``): what a frame saves of it, and what a new version
    needs to take the frame over."""

    id: str  # "for item in items/try:body/charge(order)#2", or the name the user gave it
    count: int  # points sharing its place: another count in a new version makes ``#2`` ambiguous
    line: int
    owners: tuple[str, ...]  # the constructs and statements around it, outermost first
    variables: tuple[str, ...]  # the user's variables a frame standing here may hold
    roles: tuple[tuple[str, str], ...]  # the compiler's: (name, "depth:part:number:what")


@dataclass(frozen=True)
class CodeBlock:
    """Straight-line code between suspension points, compiled to a real Python function.

    ``handler`` is where an exception escaping the block goes: ``(pc,
    variable, is_finally)``; ``handling`` lists the exceptions the block runs
    inside ``except`` or ``finally`` clauses of (variable, holds_a_record);
    ``live`` is what a frame standing at this block's start must save.
    """

    pc: int
    code: types.CodeType
    handler: tuple[int, str, bool] | None
    handling: tuple[tuple[str, bool], ...]
    point: ResumePoint | None  # when this block is where a frame resumes
    live: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class CompiledFunction:
    """One durable function: found again in a new process by ``key`` and checked by ``fingerprint``."""

    key: str
    qualname: str
    filename: str
    first_line: int
    fingerprint: str  # the source's syntax and the block table it was lowered into
    source_fingerprint: str  # the source's syntax only: what frames saved before 0.3 name
    globals: dict[str, Any]
    blocks: tuple[CodeBlock, ...]
    variables: tuple[str, ...]
    captured: frozenset[str]  # variables whose cell a closure may share
    local_names: frozenset[str]  # the user's own local variables (not those of an enclosing function)
    descriptions: dict[str, str]  # compiler variables -> what they hold
    helper_cells: dict[str, types.CellType]
    awaited_names: frozenset[str]  # globals this function awaits calls of
    nested_codes: tuple[types.CodeType, ...]  # functions, lambdas, classes defined in its blocks
    listing_text: str = field(repr=False)
    points: dict[str, int] = field(default_factory=dict, repr=False)  # resume point id -> pc
    positions: dict[int, str] = field(default_factory=dict, repr=False)  # pc -> JSON for stores

    @property
    def listing(self) -> cst.Module:
        """The generated code blocks as a libcst module (for reading and debugging)."""
        return cst.parse_module(self.listing_text)

    def describe(self, variable: str) -> str:
        """How to name a frame variable to a user."""
        return self.descriptions.get(variable, f"local `{variable}`")

    def line_of(self, pc: int) -> int:
        point = self.blocks[pc].point
        return point.line if point is not None else self.first_line
