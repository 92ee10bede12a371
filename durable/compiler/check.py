"""Reject, with the construct, function and line, what cannot be made durable.

Everything not rejected here is supported, either lowered into blocks or run
natively. The list is short on purpose; each entry says why.
"""

from __future__ import annotations

import libcst as cst

from .marks import SuspensionMarks
from .scope import Scope
from .source import FunctionSource


def check(source: FunctionSource, scope: Scope, marks: SuspensionMarks, *, nested: bool) -> None:
    """``nested``: the function is defined inside durable code, whose frames share its cells."""
    for statement in source.function.body.body:
        statement.visit(_Checker(source, scope, marks, nested))


class _Checker(cst.CSTVisitor):
    def __init__(self, source: FunctionSource, scope: Scope, marks: SuspensionMarks,
                 nested: bool) -> None:
        self.source = source
        self.scope = scope
        self.marks = marks
        self.nested = nested

    def _reject(self, message: str, node: cst.CSTNode) -> None:
        raise self.source.error(message, node)

    # Nested scopes are checked for what runs in this scope only.
    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        if self.marks.suspends(node):
            self._reject("`await` in a decorator or default value of a nested function", node)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        if self.marks.suspends(node):
            self._reject("`await` in a decorator or base of a nested class", node)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        if self.marks.suspends(node):
            self._reject("`await` in a default value of a lambda", node)
        return False

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        if self.nested:
            return
        names = ", ".join(item.name.value for item in node.names)
        self._reject(
            f"`nonlocal {names}` in a durable function: variables of an enclosing function "
            "are not part of the saved state, so writes to them would be lost on resume",
            node,
        )

    def visit_Yield(self, node: cst.Yield) -> None:
        self._reject(
            "`yield` makes this an async generator; async generators cannot be durable "
            "(return a list, or await a durable function per item)",
            node,
        )

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> None:
        if self.marks.suspends(node):
            self._reject(
                "`await` inside a generator expression makes an async generator, which "
                "cannot be saved; use a list comprehension",
                node,
            )

    def visit_TryStar(self, node: cst.TryStar) -> None:
        if self.marks.suspends(node):
            self._reject("`try`/`except*` with a suspension point inside", node)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.type is not None and self.marks.suspends(node.type):
            self._reject("`await` in the exception type of an `except` clause", node)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if not isinstance(func, cst.Name) or func.value in self.scope.variables:
            return
        positional = [a for a in node.args if a.keyword is None and not a.star]
        if func.value in ("locals", "vars") and not node.args:
            self._reject(
                f"`{func.value}()` in a durable function: its variables live in saved "
                "frames, not in a Python frame",
                node,
            )
        if func.value in ("eval", "exec") and len(positional) < 2 and not _has_keyword(node, "globals"):
            self._reject(
                f"`{func.value}()` without an explicit namespace cannot see the variables "
                "of a durable function; pass globals and locals",
                node,
            )


def _has_keyword(node: cst.Call, name: str) -> bool:
    return any(a.keyword is not None and a.keyword.value == name for a in node.args)

