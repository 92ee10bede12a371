"""Turn the block listing into Python code objects that point at the user's lines.

All blocks of a function are emitted as functions nested in one *factory*
function whose locals are the frame variables and the runtime helpers. The
factory is never called: each block's code object is taken out of it and
bound, per call, to that call's cells, so blocks read and write the
function's variables natively (closure cells, not dict lookups) and closures
created in one block see the writes of another.

The generated source is compiled from a Python ``ast`` whose positions are
rewritten to the original file's lines (and columns, where a generated line
is the user's line moved), so tracebacks show the user's code.
"""

from __future__ import annotations
import __future__

import ast
import linecache
import types
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ..runtime.helpers import BLOCK_HELPERS
from .emitter import Block
from .source import FunctionSource

_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


@dataclass(frozen=True)
class GeneratedCode:
    module: cst.Module  # the readable listing
    block_codes: dict[int, types.CodeType]


def generate(source: FunctionSource, blocks: list[Block], prefix: str,
             frame_variables: list[str], globals_: frozenset[str]) -> GeneratedCode:
    helpers = [f"{prefix}{name}" for name in BLOCK_HELPERS]
    variables = set(frame_variables)
    definitions = [_block_function(block, prefix, variables, globals_) for block in blocks]
    factory_locals = [*frame_variables, *helpers]
    declare = cst.SimpleStatementLine([cst.Assign(
        [cst.AssignTarget(cst.Name(n)) for n in factory_locals], cst.Name("None"))])
    factory = cst.FunctionDef(
        name=cst.Name(f"{prefix}factory"),
        params=cst.Parameters(),
        body=cst.IndentedBlock([declare, *definitions]),
    )
    module = cst.Module(body=[factory])
    tree = _positioned_ast(module, blocks, definitions, source)
    flags = source.code.co_flags & _FUTURE_FLAGS
    code = compile(tree, source.filename, "exec", flags=flags, dont_inherit=True)
    factory_code = _const_code(code, f"{prefix}factory")
    block_codes = {}
    for block in blocks:
        inner = _const_code(factory_code, f"{prefix}b{block.pc}")
        old = f"{prefix}factory.<locals>.{prefix}b{block.pc}"
        block_codes[block.pc] = _requalify(inner, old, source.qualname).replace(co_name=source.name)
    return GeneratedCode(module, block_codes)


def _block_function(block: Block, prefix: str, variables: set[str],
                    globals_: frozenset[str]) -> cst.FunctionDef:
    statements = [statement for statement, _, _ in block.statements]
    referenced = _names(statements)
    declarations: list[cst.BaseStatement] = []
    if referenced & globals_:
        names = [cst.NameItem(cst.Name(n)) for n in sorted(referenced & globals_)]
        declarations.append(cst.SimpleStatementLine([cst.Global(names)]))
    if referenced & variables:
        names = [cst.NameItem(cst.Name(n)) for n in sorted(referenced & variables)]
        declarations.append(cst.SimpleStatementLine([cst.Nonlocal(names)]))
    return cst.FunctionDef(
        name=cst.Name(f"{prefix}b{block.pc}"),
        params=cst.Parameters([cst.Param(cst.Name(f"{prefix}V"))]),
        body=cst.IndentedBlock([*declarations, *statements] or [cst.SimpleStatementLine([cst.Pass()])]),
    )


def _names(statements: list[cst.BaseStatement]) -> set[str]:
    found: set[str] = set()

    class _Collect(cst.CSTVisitor):
        def visit_Name(self, node: cst.Name) -> None:
            found.add(node.value)

    for statement in statements:
        statement.visit(_Collect())
    return found


def _positioned_ast(module: cst.Module, blocks: list[Block], definitions: list[cst.FunctionDef],
                    source: FunctionSource) -> ast.Module:
    """Parse the generated code and move every position to the user's file."""
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    text = module.code
    generated_lines = text.splitlines()
    line_map: dict[int, tuple[int, bool]] = {}  # generated line -> (file line, moved as is)
    fallback = source.code.co_firstlineno
    for block, definition in zip(blocks, definitions, strict=True):
        first = block.statements[0][1] if block.statements else fallback
        header = positions[definition]
        body_start = positions[definition.body.body[0]].start.line if definition.body.body else header.end.line
        for generated in range(header.start.line, body_start):
            line_map[generated] = (first, False)
        for statement, line, verbatim in block.statements:
            span = positions[statement]
            for offset in range(span.end.line - span.start.line + 1):
                line_map[span.start.line + offset] = (line + offset, True) if verbatim else (line, False)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if not hasattr(node, "lineno") or node.lineno is None:
            continue
        start = _place(node.lineno, node.col_offset, line_map, generated_lines, source, fallback, False)
        end = _place(node.end_lineno or node.lineno, node.end_col_offset or 0, line_map,
                     generated_lines, source, fallback, True)
        if end < start:
            end = (start[0], len(linecache.getline(source.filename, start[0]).rstrip()))
            end = max(end, start)
        node.lineno, node.col_offset = start
        node.end_lineno, node.end_col_offset = end
    return tree


def _place(generated: int, column: int, line_map: dict[int, tuple[int, bool]],
           generated_lines: list[str], source: FunctionSource, fallback: int,
           is_end: bool) -> tuple[int, int]:
    line, moved = line_map.get(generated, (fallback, False))
    original = linecache.getline(source.filename, line)
    new_text = generated_lines[generated - 1] if generated - 1 < len(generated_lines) else ""
    if moved and original.strip() == new_text.strip():
        shift = (len(original) - len(original.lstrip())) - (len(new_text) - len(new_text.lstrip()))
        return line, max(0, column + shift)
    # A rewritten line: cover the whole original line, so no misleading caret is drawn.
    indent = len(original) - len(original.lstrip())
    return (line, len(original.rstrip())) if is_end else (line, indent)


def _const_code(code: types.CodeType, name: str) -> types.CodeType:
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == name:
            return const
    raise LookupError(name)  # pragma: no cover - generate() always defines it


def _requalify(code: types.CodeType, old: str, new: str) -> types.CodeType:
    """Give a block and everything defined in it the user's qualified names."""

    def fix(value: str) -> str:
        return new + value[len(old):] if value.startswith(old) else value

    consts = tuple(
        _requalify(c, old, new) if isinstance(c, types.CodeType)
        else fix(c) if isinstance(c, str) else c
        for c in code.co_consts
    )
    return code.replace(co_qualname=fix(code.co_qualname), co_consts=consts)
