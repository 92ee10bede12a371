"""Which nodes contain a suspension point.

A suspension point is an ``await`` (also the implicit ones of ``async for``
and ``async with``) or a ``raise PauseForEventException(...)`` statement,
belonging to this function: nested functions, lambdas and classes have their
own. Only nodes that contain one are lowered into blocks; everything else is
kept as ordinary Python, so it runs at native speed with native semantics.
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import CodeRange

PAUSE_NAME = "PauseForEventException"


def is_static_pause(node: cst.CSTNode) -> bool:
    """``raise PauseForEventException(...)`` (or ``raise module.PauseForEventException(...)``).

    A ``from`` clause is allowed and evaluated; a pause has no cause to keep.
    """
    if not isinstance(node, cst.Raise):
        return False
    call = node.exc
    if not isinstance(call, cst.Call):
        return False
    func = call.func
    name = func.attr if isinstance(func, cst.Attribute) else func
    return isinstance(name, cst.Name) and name.value == PAUSE_NAME


class SuspensionMarks:
    """Answers ``suspends(node)``, caching the answer for every node visited.

    Given the source's lines and positions, a node whose lines do not even contain one of
    the words a suspension needs is answered without walking it.
    """

    _WORDS = ("await", "async", PAUSE_NAME)

    def __init__(self, lines: list[str] | None = None,
                 positions: dict[cst.CSTNode, CodeRange] | None = None) -> None:
        self._cache: dict[cst.CSTNode, bool] = {}
        self._lines = lines
        self._positions = positions or {}

    def suspends(self, node: cst.CSTNode) -> bool:
        cached = self._cache.get(node)
        if cached is None:
            cached = self._cache[node] = self._mentions_a_suspension(node) and self._compute(node)
        return cached

    def _mentions_a_suspension(self, node: cst.CSTNode) -> bool:
        position = self._positions.get(node)
        if position is None or self._lines is None:
            return True
        text = "".join(self._lines[position.start.line - 1:position.end.line])
        return any(word in text for word in self._WORDS)

    def _compute(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.Await) or is_static_pause(node):
            return True
        if isinstance(node, cst.For | cst.With | cst.CompFor) and node.asynchronous is not None:
            return True
        if isinstance(node, cst.FunctionDef):
            # Only what runs in this scope: decorators and defaults.
            return any(self.suspends(d) for d in node.decorators) or self._defaults_suspend(node.params)
        if isinstance(node, cst.Lambda):
            return self._defaults_suspend(node.params)
        if isinstance(node, cst.ClassDef):
            return any(self.suspends(part) for part in (*node.decorators, *node.bases, *node.keywords))
        return any(self.suspends(child) for child in node.children)

    def _defaults_suspend(self, params: cst.Parameters) -> bool:
        return any(
            p.default is not None and self.suspends(p.default)
            for p in (*params.posonly_params, *params.params, *params.kwonly_params)
        )
