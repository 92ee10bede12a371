"""The listing of code blocks a function is lowered into, and how control moves between them.

In the manner of regenerator's Emitter: blocks are numbered as they are
created (the number is the program counter the runtime saves), statements are
appended to the open block, and jumps are ``return <pc>``. Try regions give
each block the handler the runtime jumps to when an exception escapes it,
and ``finally`` clauses keep a completion record (a pending return, jump or
raise) in a frame variable while they run; the end of a ``finally`` clause
continues whatever was pending, routing it through outer ``finally`` clauses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import libcst as cst

from ..runtime.actions import JUMP, RAISE, RETURN
from . import nodes


@dataclass
class Handler:
    """Where the runtime goes when an exception escapes a block."""

    target: int
    variable: str  # frame variable that receives the exception (or its RAISE record)
    is_finally: bool


@dataclass
class Suspension:
    """A resume point: the only places a saved frame can stand.

    ``owners`` are the constructs and statements it is lowered inside (see
    ``Owner``), outermost first; ``labels`` what each was doing then.
    """

    what: str  # the code it awaits, normalised
    line: int
    owners: tuple[Owner, ...]
    labels: tuple[str, ...]

    @property
    def place(self) -> str:
        """The constructs around it and what it awaits: the same in any version of the
        function where those are the same."""
        constructs = [label for owner, label in zip(self.owners, self.labels, strict=True)
                      if not owner.is_statement]
        return "/".join([*constructs, self.what])


@dataclass(eq=False)
class Owner:
    """A construct or statement that owns the frame variables made while lowering it.

    A variable's *role* at a resume point (its owner's place among the point's
    owners, the owner's part then, its number there) is the same in any version
    of the function where those owners are the same, so a frame saved by one
    version can hand its values to another.
    """

    signature: str  # "for item in items", "try", "with lock", or a statement's code
    part: str = ""  # where lowering is: "body", "else", "except ValueError", "finally"...
    is_statement: bool = False  # a statement, not a construct: not part of a point's place
    made: dict[str, int] = field(default_factory=dict)  # variables made so far, per part

    @property
    def label(self) -> str:
        return f"{self.signature}:{self.part}" if self.part else self.signature


@dataclass(frozen=True)
class Made:
    """Who made a frame variable, and as what (see ``Owner``)."""

    owner: Owner | None
    part: str
    number: int
    holds: str


@dataclass
class Block:
    pc: int
    handler: Handler | None
    handling: tuple[tuple[str, bool], ...]  # exceptions being handled: (variable, is_record)
    statements: list[tuple[cst.BaseStatement, int, bool]] = field(default_factory=list)
    successors: set[int] = field(default_factory=set)
    suspension: Suspension | None = None
    terminated: bool = False
    jump_only: int | None = None  # the label it jumps to, when that is all it does


@dataclass
class FinallyRegion:
    record: str  # frame variable holding the completion record
    label: int  # first block of the finally clause
    jump_targets: dict[int, int] = field(default_factory=dict)  # pc -> finally depth of target


@dataclass
class Loop:
    break_label: int
    continue_label: int
    finally_depth: int


class Emitter:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.blocks: dict[int, Block] = {}
        self.next_pc = 0
        self.temp_count = 0
        self.temps: dict[str, str] = {}  # frame variable -> what it holds, for error messages
        self.handlers: list[Handler] = []  # innermost last
        self.handling: list[tuple[str, bool]] = []
        self.finally_regions: list[FinallyRegion] = []
        self.loops: list[Loop] = []
        self.current: Block | None = None
        self.aliases: dict[int, int] = {}
        self.line = 0  # file line synthetic statements are attributed to
        self.owners: list[Owner] = []  # the constructs and the statement being lowered, innermost last
        self.made: dict[str, Made] = {}  # frame variable -> who made it

    # Owners.
    @contextmanager
    def owned(self, owner: Owner) -> Iterator[Owner]:
        """Lower inside ``owner``: variables made meanwhile are its own."""
        self.owners.append(owner)
        try:
            yield owner
        finally:
            self.owners.pop()

    def suspension(self, what: str) -> Suspension:
        """A resume point here, awaiting ``what``."""
        return Suspension(what, self.line, tuple(self.owners),
                          tuple(owner.label for owner in self.owners))

    # Labels and blocks.
    def new_label(self) -> int:
        pc = self.next_pc
        self.next_pc += 1
        return pc

    def mark(self, label: int, suspension: Suspension | None = None) -> None:
        """Open block ``label``; the open block, if it runs on, falls through to it."""
        handler = self.handlers[-1] if self.handlers else None
        handling = tuple(self.handling)
        current = self.current
        if current is not None and not current.terminated:
            if (not current.statements and suspension is None and current.suspension is None
                    and current.handler == handler and current.handling == handling):
                self.aliases[label] = current.pc  # nothing between them: one block, two names
                return
            self.jump(label)
        block = Block(pc=label, handler=handler, handling=handling, suspension=suspension)
        assert label not in self.blocks, label
        self.blocks[label] = block
        self.current = block

    def _open(self) -> Block:
        if self.current is None or self.current.terminated:
            self.mark(self.new_label())  # code after a jump: unreachable, kept as written
        assert self.current is not None
        return self.current

    def finish(self, entry: int) -> tuple[list[Block], dict[int, int]]:
        """Number the blocks for good: aliases merged, jump-only blocks threaded through.

        Returns the blocks and, for every label, its block's number; the code generator
        writes those numbers where the statements say ``ref(label)``.
        """
        resolved: dict[int, int] = {}

        def resolve(label: int) -> int:
            seen = set()
            label = self.aliases.get(label, label)
            while self.blocks[label].jump_only is not None and label not in seen:
                seen.add(label)
                label = self.aliases.get(self.blocks[label].jump_only, self.blocks[label].jump_only)
            return label

        start = resolve(entry)
        kept = [start] + [pc for pc in self.blocks if pc != start and self.blocks[pc].jump_only is None]
        numbers = {label: number for number, label in enumerate(kept)}
        for label in (*self.blocks, *self.aliases):
            resolved[label] = numbers[resolve(label)]
        finished = []
        for label in kept:
            block = self.blocks[label]
            block.pc = resolved[label]
            block.successors = {resolved[s] for s in block.successors}
            if block.handler is not None:
                block.handler = Handler(resolved[block.handler.target], block.handler.variable,
                                        block.handler.is_finally)
            finished.append(block)
        return finished, resolved

    # Emitting.
    def emit(self, statement: cst.BaseStatement, line: int | None = None, verbatim: bool = False) -> None:
        self._open().statements.append((statement, self.line if line is None else line, verbatim))

    def emit_small(self, *small: cst.BaseSmallStatement) -> None:
        self.emit(nodes.line(*small))

    def terminate(self, *small: cst.BaseSmallStatement, successors: tuple[int, ...] = ()) -> None:
        block = self._open()
        self.emit_small(*small)
        block.successors.update(successors)
        block.terminated = True

    def jump(self, label: int) -> None:
        block = self._open()
        self.terminate(nodes.return_small(self.ref(label)), successors=(label,))
        if len(block.statements) == 1:
            block.jump_only = label

    def branch(self, test: cst.BaseExpression, label: int) -> None:
        """``if test: goto label``; the block continues after it."""
        block = self._open()
        self.emit(nodes.if_then(test, nodes.return_small(self.ref(label))))
        block.successors.add(label)

    def ref(self, label: int) -> cst.Name:
        """A jump target in emitted code; ``finish`` turns it into the block's final number."""
        return cst.Name(f"{self.prefix}L{label}")

    def temp(self, holds: str = "an intermediate value") -> cst.Name:
        """A fresh frame variable for a value that must survive a suspension."""
        self.temp_count += 1
        variable = f"{self.prefix}t{self.temp_count}"
        self.temps[variable] = f"{holds} (line {self.line})"
        owner = self.owners[-1] if self.owners else None
        part = owner.part if owner is not None else ""
        number = owner.made.get(part, 0) if owner is not None else len(self.made)
        if owner is not None:
            owner.made[part] = number + 1
        self.made[variable] = Made(owner, part, number, holds)
        return cst.Name(variable)

    def local(self, hint: str) -> cst.Name:
        """A variable of one block only (never saved)."""
        self.temp_count += 1
        return cst.Name(f"{self.prefix}{hint}{self.temp_count}")

    def helper(self, helper: str) -> cst.Name:
        return cst.Name(f"{self.prefix}{helper}")

    # Abrupt completions, routed through the finally clauses they leave.
    def route(self, record: cst.BaseExpression, depth: int,
              jump_target: int | None = None) -> list[cst.BaseSmallStatement]:
        """Statements that carry ``record`` out to finally depth ``depth``.

        ``record`` is a RETURN or JUMP record; when no finally clause lies in
        between, a return record is the block's action and a jump is a jump.
        """
        crossing = self.finally_regions[depth:]
        if not crossing:
            if jump_target is not None:
                self._note_successor(jump_target)
                return [nodes.return_small(self.ref(jump_target))]
            return [nodes.return_small(record)]
        region = crossing[-1]
        if jump_target is not None:
            region.jump_targets[jump_target] = depth
        self._note_successor(region.label)
        return [
            nodes.assign_small(cst.Name(region.record), record),
            nodes.return_small(self.ref(region.label)),
        ]

    def route_return(self, value: cst.BaseExpression | None) -> list[cst.BaseSmallStatement]:
        return self.route(nodes.tuple_of(nodes.integer(RETURN), value or cst.Name("None")), 0)

    def route_jump(self, loop: Loop, to_break: bool) -> list[cst.BaseSmallStatement]:
        target = loop.break_label if to_break else loop.continue_label
        record = nodes.tuple_of(nodes.integer(JUMP), self.ref(target))
        return self.route(record, loop.finally_depth, jump_target=target)

    def _note_successor(self, label: int) -> None:
        self._open().successors.add(label)

    def end_finally(self, region: FinallyRegion, after: int) -> None:
        """Continue what the finally clause of ``region`` interrupted."""
        record = cst.Name(region.record)
        kind = cst.Subscript(record, [cst.SubscriptElement(cst.Index(nodes.integer(0)))])
        self.branch(nodes.is_none(record), after)
        self.emit(nodes.if_then(nodes.equals(kind, nodes.integer(RAISE)), nodes.return_small(record)))
        for target, depth in sorted(region.jump_targets.items()):
            target_test = nodes.equals(
                cst.Subscript(record, [cst.SubscriptElement(cst.Index(nodes.integer(1)))]),
                self.ref(target),
            )
            is_jump = cst.BooleanOperation(
                nodes.equals(kind, nodes.integer(JUMP)), cst.And(), target_test
            )
            self.emit(nodes.if_then(is_jump, *self.route(record, depth, jump_target=target)))
        self.terminate(*self.route(record, 0))

