"""Prepare a statement that contains no suspension point to run as it is inside a block.

Only what leaves the statement changes: ``return`` becomes the block's
RETURN action (through any lowered ``finally`` on the way), and ``break`` /
``continue`` aimed at a lowered loop become jumps. Loops, handlers and
everything else inside stay native Python. ``global`` statements move to the
top of each block (as ``nonlocal`` statements do).
"""

from __future__ import annotations

import libcst as cst

from .emitter import Emitter


class VerbatimRewriter(cst.CSTTransformer):
    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self.path: list[cst.CSTNode] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef | cst.ClassDef | cst.Lambda):
            return False  # another scope: its return/break/continue are its own
        self.path.append(node)
        return True

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):  # type: ignore[override]
        if self.path and self.path[-1] is original:
            self.path.pop()
        return super().on_leave(original, updated)

    def _in_native_loop(self) -> bool:
        for loop, child in zip(reversed(self.path[:-1]), reversed(self.path[1:]), strict=False):
            if isinstance(loop, cst.For | cst.While) and child is loop.body:
                return True
        return False

    def leave_Return(self, original: cst.Return, updated: cst.Return):  # type: ignore[override]
        return cst.FlattenSentinel(self.emitter.route_return(updated.value))

    def leave_Break(self, original: cst.Break, updated: cst.Break):  # type: ignore[override]
        if self._in_native_loop():
            return updated
        return cst.FlattenSentinel(self.emitter.route_jump(self.emitter.loops[-1], to_break=True))

    def leave_Continue(self, original: cst.Continue, updated: cst.Continue):  # type: ignore[override]
        if self._in_native_loop():
            return updated
        return cst.FlattenSentinel(self.emitter.route_jump(self.emitter.loops[-1], to_break=False))

    def leave_Global(self, original: cst.Global, updated: cst.Global) -> cst.Pass:
        return cst.Pass()

    def leave_Nonlocal(self, original: cst.Nonlocal, updated: cst.Nonlocal) -> cst.Pass:
        return cst.Pass()  # every block declares the function's cells itself

    def leave_AnnAssign(self, original: cst.AnnAssign, updated: cst.AnnAssign):  # type: ignore[override]
        return cst.FlattenSentinel(unannotated(updated))


def unannotated(node: cst.AnnAssign) -> list[cst.BaseSmallStatement]:
    """``x: T = v`` as ``x = v``: a function never evaluates a local's annotation, and an
    annotated name cannot be a block's nonlocal. Without a value, only the parts of an
    attribute or subscript target are evaluated, as CPython does."""
    if node.value is not None:
        return [cst.Assign([cst.AssignTarget(node.target)], node.value)]
    target = node.target
    if isinstance(target, cst.Attribute):
        return [cst.Expr(target.value)]
    if isinstance(target, cst.Subscript):
        parts: list[cst.BaseSmallStatement] = [cst.Expr(target.value)]
        for element in target.slice:
            if isinstance(element.slice, cst.Index):
                parts.append(cst.Expr(element.slice.value))
        return parts
    return [cst.Pass()]
