"""What the compiler hands the runtime: a function's code blocks and their tables."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import libcst as cst


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
    suspension: tuple[str, int] | None  # (stable id, line) when this block is a resume point
    live: frozenset[str]


@dataclass(frozen=True, eq=False)
class CompiledFunction:
    """One durable function: found again in a new process by ``key`` and checked by ``fingerprint``."""

    key: str
    qualname: str
    filename: str
    first_line: int
    fingerprint: str
    globals: dict[str, Any]
    blocks: tuple[CodeBlock, ...]
    variables: tuple[str, ...]
    captured: frozenset[str]  # variables whose cell a closure may share
    descriptions: dict[str, str]  # compiler variables -> what they hold
    helper_cells: dict[str, types.CellType]
    awaited_names: frozenset[str]  # globals this function awaits calls of
    nested_codes: tuple[types.CodeType, ...]  # functions, lambdas, classes defined in its blocks
    listing_text: str = field(repr=False)

    @property
    def listing(self) -> cst.Module:
        """The generated code blocks as a libcst module (for reading and debugging)."""
        return cst.parse_module(self.listing_text)

    def describe(self, variable: str) -> str:
        """How to name a frame variable to a user."""
        return self.descriptions.get(variable, f"local `{variable}`")

    def line_of(self, pc: int) -> int:
        suspension = self.blocks[pc].suspension
        return suspension[1] if suspension is not None else self.first_line
