"""Which nodes contain a suspension point.

A suspension point is an ``await`` (also the implicit ones of ``async for``
and ``async with``) or a ``raise PauseForEventException(...)`` statement,
belonging to this function: nested functions, lambdas and classes have their
own. Only nodes that contain one are lowered into blocks; everything else is
kept as ordinary Python, so it runs at native speed with native semantics.
"""

from __future__ import annotations

import libcst as cst

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
    """Answers ``suspends(node)``, caching the answer for every node visited."""

    def __init__(self) -> None:
        self._cache: dict[cst.CSTNode, bool] = {}

    def suspends(self, node: cst.CSTNode) -> bool:
        cached = self._cache.get(node)
        if cached is None:
            cached = self._cache[node] = self._compute(node)
        return cached

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
