"""Source-level rewrites applied before lowering, keeping every node's position."""

from __future__ import annotations

import libcst as cst
from libcst.metadata import CodeRange


class _PositionKeeping(cst.CSTTransformer):
    """A transformer whose rebuilt nodes keep the position of the nodes they replace."""

    def __init__(self, positions: dict[cst.CSTNode, CodeRange]) -> None:
        self.positions = positions

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):  # type: ignore[override]
        result = super().on_leave(original, updated)
        if isinstance(result, cst.CSTNode) and result is not original and original in self.positions:
            self.positions.setdefault(result, self.positions[original])
        return result


class _ZeroArgumentSuper(_PositionKeeping):
    """``super()`` -> ``super(__class__, self)``: blocks are not the method's own frame."""

    def __init__(self, positions: dict[cst.CSTNode, CodeRange], first_parameter: str) -> None:
        super().__init__(positions)
        self.first_parameter = first_parameter

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False  # nested functions have their own first argument

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        if isinstance(updated.func, cst.Name) and updated.func.value == "super" and not updated.args:
            return updated.with_changes(args=[
                cst.Arg(cst.Name("__class__")), cst.Arg(cst.Name(self.first_parameter))])
        return updated


def rewrite_zero_argument_super(function: cst.FunctionDef, positions: dict[cst.CSTNode, CodeRange],
                                first_parameter: str | None) -> cst.FunctionDef:
    if first_parameter is None:
        return function
    body = function.body.visit(_ZeroArgumentSuper(positions, first_parameter))
    rewritten = function.with_changes(body=body)
    positions[rewritten] = positions[function]
    return rewritten
