"""Find, parse and fingerprint the source of a function.

Everything later passes need to know about where the user's code lives is
gathered here once: the file, the line and column the dedented text starts
at, the parsed libcst tree with positions, and a fingerprint that changes
exactly when the function's code changes (not its comments or layout).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import types
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from ..errors import CompileError

COMPILER_VERSION = "1"


@dataclass(frozen=True)
class FunctionSource:
    code: types.CodeType
    module_name: str
    filename: str
    first_line: int  # file line of the first line of ``text``
    indent: int  # columns removed by dedenting
    text: str
    function: cst.FunctionDef
    positions: dict[cst.CSTNode, CodeRange]
    fingerprint: str

    @property
    def name(self) -> str:
        return self.code.co_name

    @property
    def qualname(self) -> str:
        return self.code.co_qualname

    @property
    def key(self) -> str:
        return f"{self.module_name}:{self.qualname}"

    def line_of(self, node: cst.CSTNode) -> int:
        """File line where ``node`` starts."""
        return self.positions[node].start.line + self.first_line - 1

    def error(self, message: str, node: cst.CSTNode | None) -> CompileError:
        line = self.line_of(node) if node in self.positions else self.code.co_firstlineno
        return CompileError(message, function=self.qualname, filename=self.filename, lineno=line)


def read_source(code: types.CodeType, module_name: str) -> FunctionSource:
    """Parse the ``async def`` that compiled to ``code``."""
    try:
        lines, first_line = inspect.getsourcelines(code)
    except (OSError, TypeError) as exc:
        raise CompileError(
            f"cannot read the source of {code.co_qualname}(): durable functions must be "
            f"defined in a file Python can read back ({exc})",
            function=code.co_qualname, filename=code.co_filename, lineno=code.co_firstlineno,
        ) from None
    raw = "".join(lines)
    text = textwrap.dedent(raw)
    indent = _indent_width(raw) - _indent_width(text)
    wrapper = MetadataWrapper(cst.parse_module(text), unsafe_skip_copy=True)  # nothing mutates it
    positions = dict(wrapper.resolve(PositionProvider))
    function = _find_function(wrapper.module, code)
    return FunctionSource(
        code=code, module_name=module_name, filename=code.co_filename,
        first_line=first_line, indent=indent, text=text, function=function,
        positions=positions, fingerprint=fingerprint(text),
    )


def fingerprint(text: str) -> str:
    """Hash of the function's syntax tree: comments and layout do not count."""
    tree = ast.dump(ast.parse(text), annotate_fields=False, include_attributes=False)
    return hashlib.sha256(f"{COMPILER_VERSION}\0{tree}".encode()).hexdigest()[:16]


def _indent_width(text: str) -> int:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return len(first) - len(first.lstrip())


def _find_function(module: cst.Module, code: types.CodeType) -> cst.FunctionDef:
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == code.co_name:
            return statement
    raise CompileError(
        f"the source found for {code.co_qualname}() does not start with its definition",
        function=code.co_qualname, filename=code.co_filename, lineno=code.co_firstlineno,
    )
