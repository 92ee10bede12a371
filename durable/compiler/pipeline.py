"""The compiler's passes in order, from a code object to a ``CompiledFunction``."""

from __future__ import annotations

import dataclasses
import hashlib
import types
from typing import Any

from ..runtime.code import CodeBlock, CompiledFunction, ResumePoint
from ..runtime.helpers import HELPER_CELLS
from ..runtime.migration import Position
from .check import check
from .codegen import generate
from .emitter import Block
from .liveness import live_variables
from .marks import SuspensionMarks
from .points import resume_points
from .rewrites import rewrite_zero_argument_super
from .scope import analyse, reserved_prefix
from .source import FunctionSource, read_source
from .statements import DurableAstTransformer


def compile_code(code: types.CodeType, globals_: dict[str, Any], *,
                 nested: bool = False) -> CompiledFunction:
    """Parse, check, lower, generate and analyse one ``async def``.

    ``nested``: defined inside durable code; its free variables are that code's cells.
    """
    source = read_source(code, globals_.get("__name__", "__main__"))
    scope = analyse(source.function)
    marks = SuspensionMarks(source.text.splitlines(keepends=True), source.positions)
    check(source, scope, marks, nested=nested)
    prefix = reserved_prefix(source.text)
    source = _prepared(source, scope.parameters)
    transformer = DurableAstTransformer(source, prefix, marks)
    blocks, labels = transformer.transform()
    temps = transformer.emitter.temps
    variables = sorted(scope.variables | set(temps) | set(code.co_freevars))
    generated = generate(source, blocks, labels, prefix, variables, scope.globals, scope.variables)
    live, captured = live_variables(blocks, generated.block_codes, set(variables))
    captured |= frozenset(code.co_freevars)  # shared with the enclosing scope
    saved = {b.pc: live[b.pc] | captured for b in blocks}
    points = resume_points(blocks, saved, transformer.emitter.made, source)
    fingerprint = lowered_fingerprint(source.fingerprint, generated.text)
    return CompiledFunction(
        key=source.key,
        qualname=source.qualname,
        filename=source.filename,
        first_line=code.co_firstlineno,
        fingerprint=fingerprint,
        source_fingerprint=source.fingerprint,
        globals=globals_,
        blocks=tuple(_code_block(b, generated.block_codes[b.pc], saved[b.pc], points.get(b.pc))
                     for b in blocks),
        variables=tuple(variables),
        captured=captured,
        local_names=scope.variables,
        descriptions=dict(temps),
        helper_cells={f"{prefix}{name}": cell for name, cell in HELPER_CELLS.items()},
        awaited_names=frozenset(transformer.awaited_names - scope.variables),
        nested_codes=tuple(c for pc in sorted(generated.block_codes) for c in _nested(generated.block_codes[pc])),
        listing_text=generated.text,
        points={point.id: pc for pc, point in points.items()},
        positions={pc: Position.of(source.key, fingerprint, point).to_json()
                   for pc, point in points.items()},
    )


def lowered_fingerprint(source_fingerprint: str, listing: str) -> str:
    """What a saved position is valid for: the source and the blocks it was lowered into (a
    compiler that lowers the same source differently never resumes a frame by its number)."""
    return hashlib.sha256(f"{source_fingerprint}\0{listing}".encode()).hexdigest()[:16]


def _prepared(source: FunctionSource, parameters: tuple[str, ...]) -> FunctionSource:
    if "__class__" not in source.code.co_freevars:
        return source
    positions = dict(source.positions)
    function = rewrite_zero_argument_super(source.function, positions, parameters[0] if parameters else None)
    return dataclasses.replace(source, function=function, positions=positions)


def _nested(code: types.CodeType) -> list[types.CodeType]:
    found = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.append(const)
            found.extend(_nested(const))
    return found


def _code_block(block: Block, code: types.CodeType, live: frozenset[str],
                point: ResumePoint | None) -> CodeBlock:
    handler = block.handler
    return CodeBlock(
        pc=block.pc,
        code=code,
        handler=(handler.target, handler.variable, handler.is_finally) if handler else None,
        handling=block.handling,
        point=point,
        live=tuple(sorted(live)),  # saved in this order: equal frames pickle to equal bytes
    )
