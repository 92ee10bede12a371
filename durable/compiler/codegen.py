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
import itertools
import linecache
import re
import types
from dataclasses import dataclass

import libcst as cst

from ..runtime.helpers import BLOCK_HELPERS
from .emitter import Block
from .source import FunctionSource
from .unbound import convert_unbound_locals

_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class GeneratedCode:
    text: str  # the readable listing
    block_codes: dict[int, types.CodeType]


def generate(source: FunctionSource, blocks: list[Block], labels: dict[int, int], prefix: str,
             frame_variables: list[str], globals_: frozenset[str],
             local_names: frozenset[str]) -> GeneratedCode:
    helpers = [f"{prefix}{name}" for name in BLOCK_HELPERS]
    placeholder = f"{prefix}declarations"
    definitions = [_block_function(block, prefix, placeholder) for block in blocks]
    factory_locals = [*frame_variables, *helpers]
    declare = cst.SimpleStatementLine([cst.Assign(
        [cst.AssignTarget(cst.Name(n)) for n in factory_locals], cst.Name("None"))])
    factory = cst.FunctionDef(
        name=cst.Name(f"{prefix}factory"),
        params=cst.Parameters(),
        body=cst.IndentedBlock([declare, *definitions]),
    )
    text = _declare(cst.Module(body=[factory]).code, placeholder, set(frame_variables), globals_)
    text = re.sub(re.escape(prefix) + r"L(\d+)", lambda match: str(labels[int(match[1])]), text)
    tree = _positioned_ast(text, blocks, source)
    convert_unbound_locals(tree.body[0].body[1:], prefix, local_names, source.filename)
    flags = source.code.co_flags & _FUTURE_FLAGS
    code = compile(tree, source.filename, "exec", flags=flags, dont_inherit=True)
    factory_code = _const_code(code, f"{prefix}factory")
    block_codes = {}
    for block in blocks:
        inner = _const_code(factory_code, f"{prefix}b{block.pc}")
        old = f"{prefix}factory.<locals>.{prefix}b{block.pc}"
        block_codes[block.pc] = _requalify(inner, old, source.qualname).replace(co_name=source.name)
    return GeneratedCode(text, block_codes)


def _block_function(block: Block, prefix: str, placeholder: str) -> cst.FunctionDef:
    statements = [statement for statement, _, _ in block.statements]
    return cst.FunctionDef(
        name=cst.Name(f"{prefix}b{block.pc}"),
        params=cst.Parameters([cst.Param(cst.Name(f"{prefix}V"))]),
        body=cst.IndentedBlock([cst.SimpleStatementLine([cst.Expr(cst.Name(placeholder))]), *statements]),
    )


def _declare(text: str, placeholder: str, variables: set[str], globals_: frozenset[str]) -> str:
    """Replace each block's placeholder line with its ``global``/``nonlocal`` declarations.

    A block declares every frame variable its text mentions (a superset of those it
    assigns: an extra declaration only costs a closure slot). Working on the text keeps
    this a scan instead of a walk over the tree, and keeps every line where it was.
    """
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if line.strip() == placeholder]
    for position, mark in enumerate(marks):
        end = marks[position + 1] - 1 if position + 1 < len(marks) else len(lines)
        mentioned = set(_IDENTIFIER.findall("\n".join(lines[mark + 1:end])))
        declarations = []
        if mentioned & globals_:
            declarations.append("global " + ", ".join(sorted(mentioned & globals_)))
        if mentioned & variables:
            declarations.append("nonlocal " + ", ".join(sorted(mentioned & variables)))
        indent = lines[mark][: len(lines[mark]) - len(lines[mark].lstrip())]
        lines[mark] = indent + ("; ".join(declarations) or "pass")
    return "\n".join(lines)


def _positioned_ast(text: str, blocks: list[Block], source: FunctionSource) -> ast.Module:
    """Parse the generated code and move every position to the user's file.

    The parsed tree has the generated layout: the factory, its declarations, then one
    function per block whose body is its declaration line (one or two statements, or
    ``pass``) followed by one statement per emitted statement (a line of several small
    statements: one each). That pairs every generated line with the emitted statement, and
    so the user's line, it came from.
    """
    generated_lines = text.splitlines()
    tree = ast.parse(text)
    line_map: dict[int, tuple[int, bool]] = {}  # generated line -> (file line, moved as is)
    fallback = source.code.co_firstlineno
    definitions = tree.body[0].body[1:]
    for block, definition in zip(blocks, definitions, strict=True):
        declaration_line = definition.body[0].lineno
        parsed = iter(s for s in definition.body if s.lineno != declaration_line)
        first = block.statements[0][1] if block.statements else fallback
        for generated in range(definition.lineno, declaration_line + 1):
            line_map[generated] = (first, False)
        for statement, line, verbatim in block.statements:
            count = len(statement.body) if isinstance(statement, cst.SimpleStatementLine) else 1
            for node in itertools.islice(parsed, count):
                start = _start(node)
                for offset in range(node.end_lineno - start + 1):
                    line_map[start + offset] = (line + offset, True) if verbatim else (line, False)
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


def _start(node: ast.stmt) -> int:
    """First line of a statement, its decorators included."""
    decorators = getattr(node, "decorator_list", ())
    return min([node.lineno, *(d.lineno for d in decorators)])


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
