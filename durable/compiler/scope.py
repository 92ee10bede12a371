"""Which names are the function's own variables, and which names the compiler may use.

Every name bound in the function's scope becomes a *frame variable*: a cell
shared by all code blocks of one call, saved with the call's state. Names the
function declares ``global`` are left to the module. Comprehension targets
belong to their own scope (a walrus inside a comprehension still binds here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import libcst as cst


@dataclass(frozen=True)
class Scope:
    parameters: tuple[str, ...]
    variables: frozenset[str]  # names bound in the function scope (not global/nonlocal), parameters too
    globals: frozenset[str]
    nonlocals: frozenset[str]


def analyse(function: cst.FunctionDef) -> Scope:
    collector = _Bindings()
    parameters = tuple(_parameter_names(function.params))
    for statement in function.body.body:
        statement.visit(collector)
    variables = (set(parameters) | collector.bound) - collector.globals - collector.nonlocals
    return Scope(parameters, frozenset(variables), frozenset(collector.globals),
                 frozenset(collector.nonlocals))


def reserved_prefix(source_text: str) -> str:
    """A name prefix no identifier in the source starts with, so internal names never clash."""
    identifiers = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source_text))
    n = 0
    while any(name.startswith(f"_d{n}_") for name in identifiers):
        n += 1
    return f"_d{n}_"


def target_names(target: cst.BaseExpression) -> Iterator[str]:
    """Names an assignment target binds (attributes and subscripts bind none)."""
    if isinstance(target, cst.Name):
        yield target.value
    elif isinstance(target, cst.Tuple | cst.List):
        for element in target.elements:
            yield from target_names(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from target_names(target.value)


def _parameter_names(params: cst.Parameters) -> Iterator[str]:
    for param in (*params.posonly_params, *params.params, *params.kwonly_params):
        yield param.name.value
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            yield star.name.value


class _Bindings(cst.CSTVisitor):
    """Collects names bound in one function scope without entering nested scopes."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()

    def _bind(self, target: cst.BaseExpression | None) -> None:
        if target is not None:
            self.bound.update(target_names(target))

    # Declarations.
    def visit_Global(self, node: cst.Global) -> None:
        self.globals.update(item.name.value for item in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.nonlocals.update(item.name.value for item in node.names)

    # Plain binding statements.
    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._bind(node.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._bind(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._bind(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._bind(node.target)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self._bind(node.asname.name)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> None:
        if node.name is not None:
            self._bind(node.name.name)

    def visit_ExceptStarHandler(self, node: cst.ExceptStarHandler) -> None:
        if node.name is not None:
            self._bind(node.name.name)

    def visit_Del(self, node: cst.Del) -> None:
        self._bind(node.target)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind(node.target)

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if alias.asname is not None:
                self._bind(alias.asname.name)
            else:
                self.bound.add(_dotted(alias.name).split(".")[0])

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        for alias in node.names:
            name = alias.asname.name if alias.asname is not None else alias.name
            self._bind(name)

    # Match captures.
    def visit_MatchAs(self, node: cst.MatchAs) -> None:
        self._bind(node.name)

    def visit_MatchStar(self, node: cst.MatchStar) -> None:
        self._bind(node.name)

    def visit_MatchMapping(self, node: cst.MatchMapping) -> None:
        self._bind(node.rest)

    # Nested scopes: their name binds here, their inside does not.
    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.bound.add(node.name.value)
        for decorator in node.decorators:
            decorator.visit(self)
        node.params.visit(_DefaultsOnly(self))
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self.bound.add(node.name.value)
        for part in (*node.decorators, *node.bases, *node.keywords):
            part.visit(self)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        node.params.visit(_DefaultsOnly(self))
        return False

    def visit_CompFor(self, node: cst.CompFor) -> bool:
        # The target is the comprehension's own; walruses in iter/ifs/inner still bind here.
        node.iter.visit(self)
        for condition in node.ifs:
            condition.visit(self)
        if node.inner_for_in is not None:
            node.inner_for_in.visit(self)
        return False


class _DefaultsOnly(cst.CSTVisitor):
    """Default values of a nested definition are evaluated in the enclosing scope."""

    def __init__(self, outer: _Bindings) -> None:
        self.outer = outer

    def visit_Param(self, node: cst.Param) -> bool:
        if node.default is not None:
            node.default.visit(self.outer)
        return False


def _dotted(node: cst.BaseExpression) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    raise TypeError(node)
