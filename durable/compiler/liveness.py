"""Which frame variables are live at each resume point, so only those are saved.

Dropping dead variables makes saved state smaller and spares users errors
about values they no longer use (a closed file, a finished cursor). The
analysis is conservative: a variable is live at a block's entry if the block
or any block reachable from it may read it before the block surely writes
it. Reads are taken from the compiled bytecode, so every construct counts;
sure writes are the plain assignments at the head of a block, before any
statement that could jump away. Variables captured by a nested function,
lambda or class are always live: the closure shares their cell.
"""

from __future__ import annotations

import dis
import types

import libcst as cst

from .emitter import Block
from .scope import target_names

_READS = {"LOAD_DEREF", "LOAD_CLASSDEREF", "DELETE_DEREF", "LOAD_FROM_DICT_OR_DEREF"}
_IMMEDIATE = {"<listcomp>", "<setcomp>", "<dictcomp>"}


def live_variables(blocks: list[Block], codes: dict[int, types.CodeType],
                   variables: set[str]) -> tuple[dict[int, frozenset[str]], frozenset[str]]:
    """Per block, the variables live on entry; and the variables captured by closures."""
    reads: dict[int, set[str]] = {}
    writes: dict[int, set[str]] = {}
    captured: set[str] = set()
    for block in blocks:
        block_reads, block_captured = _references(codes[block.pc], variables)
        sure_writes, written_first = _sure_writes(block)
        block_reads -= written_first
        block_reads.update(name for name, _ in block.handling)  # the runtime reads these
        reads[block.pc] = block_reads
        writes[block.pc] = sure_writes & variables
        captured |= block_captured
    live: dict[int, set[str]] = {block.pc: set() for block in blocks}
    changed = True
    while changed:
        changed = False
        for block in reversed(blocks):
            out: set[str] = set()
            for successor in block.successors:
                out |= live[successor]
            entry = reads[block.pc] | (out - writes[block.pc])
            if block.handler is not None:
                entry |= live[block.handler.target] - {block.handler.variable}
            if entry != live[block.pc]:
                live[block.pc] = entry
                changed = True
    return {pc: frozenset(names) for pc, names in live.items()}, frozenset(captured)


def _references(code: types.CodeType, variables: set[str]) -> tuple[set[str], set[str]]:
    reads: set[str] = set()
    captured: set[str] = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in _READS and instruction.argval in variables:
            reads.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name in _IMMEDIATE:  # runs now: its reads are ours
                inner_reads, inner_captured = _references(const, variables)
                reads |= inner_reads | (set(const.co_freevars) & variables)
                captured |= inner_captured
            else:
                captured |= _free_variables(const) & variables
    return reads, captured


def _free_variables(code: types.CodeType) -> set[str]:
    names = set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _free_variables(const)
    return names


def _sure_writes(block: Block) -> tuple[set[str], set[str]]:
    """Names surely assigned by the block's leading plain statements, before anything could
    jump; and those of them assigned before the block reads them (it never reads their old value)."""
    written: set[str] = set()
    written_first: set[str] = set()
    read: set[str] = set()
    for statement, _, _ in block.statements:
        if isinstance(statement, cst.If) and _only_raises(statement):
            read |= _names(statement)
            continue
        if not isinstance(statement, cst.SimpleStatementLine):
            break
        for small in statement.body:
            if isinstance(small, cst.Return | cst.Raise):
                return written, written_first
            if isinstance(small, cst.Assign):
                targets = [name for t in small.targets for name in target_names(t.target)]
                read |= _names(small.value)
                for target in small.targets:
                    read |= _target_reads(target.target)
            else:
                targets = []
                read |= _names(small)
            for name in targets:
                written.add(name)
                if name not in read:
                    written_first.add(name)
    return written, written_first


def _target_reads(target: cst.BaseExpression) -> set[str]:
    """Names an assignment target reads: the object and index of attributes and subscripts."""
    if isinstance(target, cst.Name):
        return set()
    if isinstance(target, cst.Tuple | cst.List):
        return set().union(*(_target_reads(element.value) for element in target.elements))
    if isinstance(target, cst.StarredElement):
        return _target_reads(target.value)
    return _names(target)


def _names(node: cst.CSTNode) -> set[str]:
    """Every name a statement mentions (conservatively: all of them count as reads)."""
    found: set[str] = set()

    class _Collect(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.add(name.value)

    node.visit(_Collect())
    return found


def _only_raises(statement: cst.If) -> bool:
    body = statement.body
    return (
        statement.orelse is None
        and isinstance(body, cst.SimpleStatementSuite)
        and len(body.body) == 1
        and isinstance(body.body[0], cst.Raise)
    )
