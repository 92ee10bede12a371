"""Lower expressions that contain a suspension point.

``explode(expr)`` emits, into the open block, everything in ``expr`` up to
and including its last suspension point, and returns what is left: an
expression with no suspension in it. CPython's evaluation order is kept:
every operand evaluated before a later suspending one is *spilled* into a
frame variable first, because the awaited code may change what it refers to
(``len(acc) + await f(acc)``); formatted f-string parts are spilled already
formatted. ``and``/``or``, conditional expressions and comparison chains
become branches, so what must not be evaluated is not. Comprehensions with
an ``await`` become loops over renamed variables.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import libcst as cst

from ..runtime.actions import AWAIT
from . import nodes
from .emitter import Emitter
from .marks import SuspensionMarks

if TYPE_CHECKING:
    from .source import FunctionSource

_CONSTANTS = (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.Ellipsis)


class ExpressionLowering:
    emitter: Emitter
    marks: SuspensionMarks
    source: FunctionSource
    described: dict[cst.CSTNode, str]  # what the compiler's own awaits await, for their ids
    awaited_names: set[str]  # `await name(...)`: globals make_durable compiles up front

    def lower_statement(self, statement: cst.BaseStatement) -> None:  # pragma: no cover
        raise NotImplementedError

    # Entry point.
    def explode(self, expr: cst.BaseExpression, ignore_result: bool = False) -> cst.BaseExpression:
        if not self.marks.suspends(expr):
            return expr
        self.at(expr)
        if isinstance(expr, cst.Await):
            awaited = expr.expression
            if isinstance(awaited, cst.Call) and isinstance(awaited.func, cst.Name):
                self.awaited_names.add(awaited.func.value)
            what = self.described.get(awaited) or self.code_of(awaited)
            return self.await_value(self.explode(awaited), ignore_result, what=what)
        if isinstance(expr, cst.BooleanOperation):
            return self._boolean(expr)
        if isinstance(expr, cst.IfExp):
            return self._conditional(expr)
        if isinstance(expr, cst.Comparison):
            return self._comparison(expr)
        if isinstance(expr, cst.ListComp | cst.SetComp | cst.DictComp):
            return self._comprehension(expr)
        if isinstance(expr, cst.FormattedString):
            return self._formatted(expr)
        if isinstance(expr, cst.ConcatenatedString):
            left, right = self.explode_in_order([expr.left, expr.right])
            return nodes.parens(cst.BinaryOperation(nodes.parens(left), cst.Add(), nodes.parens(right)))
        rebuild = _CHILDREN.get(type(expr))
        if rebuild is None:
            raise self.source.error(f"`await` inside {type(expr).__name__} is not supported", expr)
        children, unpack, build = rebuild(expr)
        return build(self.explode_in_order(children, unpack))

    def at(self, node: cst.CSTNode) -> None:
        """Attribute the statements emitted next to ``node``'s line."""
        position = self.source.positions.get(node)
        if position is not None:
            self.emitter.line = position.start.line + self.source.first_line - 1

    def explode_in_order(self, children: Sequence[cst.BaseExpression],
                         unpack: Sequence[str] = ()) -> list[cst.BaseExpression]:
        """Explode operands evaluated left to right, spilling each one a later one suspends after.

        ``unpack[i]`` is ``"*"`` or ``"**"`` for an operand CPython unpacks on the spot.
        """
        last = max((i for i, child in enumerate(children) if self.marks.suspends(child)), default=-1)
        result = []
        for i, child in enumerate(children):
            if i < last:
                result.append(self.spill(self.explode(child), unpack[i] if unpack else ""))
            elif i == last:
                result.append(self.explode(child))
            else:
                result.append(child)
        return result

    def spill(self, expr: cst.BaseExpression, unpack: str = "") -> cst.BaseExpression:
        if unpack == "*":
            expr = cst.Tuple([cst.StarredElement(nodes.parens(expr))])
        elif unpack == "**":
            expr = cst.Dict([cst.StarredDictElement(nodes.parens(expr))])
        elif isinstance(expr, _CONSTANTS) or self._is_temp(expr) or (isinstance(expr, cst.Name) and expr.value in ("None", "True", "False")):
            return expr
        temp = self.emitter.temp()
        self.emitter.emit(nodes.assign(temp, expr))
        return temp

    def _is_temp(self, expr: cst.BaseExpression) -> bool:
        return isinstance(expr, cst.Name) and expr.value in self.emitter.temps

    # Suspension points.
    def await_value(self, awaitable: cst.BaseExpression, ignore_result: bool = False,
                    on_stop: int | None = None, *, what: str) -> cst.BaseExpression:
        """End the block handing ``awaitable`` to the runtime; the outcome arrives in the next one.

        ``what`` names the awaited code in the resume point's id. With ``on_stop``, a
        ``StopAsyncIteration`` outcome jumps there instead of raising.
        """
        self.resume_point(nodes.integer(AWAIT), awaitable, what)
        value = cst.Name(f"{self.emitter.prefix}V")
        thrown = nodes.call(self.emitter.helper("type"), value)
        test = cst.Comparison(thrown, [cst.ComparisonTarget(cst.Is(), self.emitter.helper("Thrown"))])
        error = nodes.attribute(value, "error")
        if on_stop is not None:
            stop = nodes.call(self.emitter.helper("isinstance"), error,
                              self.emitter.helper("StopAsyncIteration"))
            self.emitter.branch(cst.BooleanOperation(nodes.parens(test), cst.And(), stop), on_stop)
        self.emitter.emit(nodes.if_then(test, cst.Raise(error)))
        if ignore_result:
            return cst.Name("None")
        temp = self.emitter.temp("the result of an `await`")
        self.emitter.emit(nodes.assign(temp, value))
        return temp

    def resume_point(self, kind: cst.Integer, payload: cst.BaseExpression, what: str) -> int:
        """End the open block with ``(kind, resume, payload)`` and open the resume block."""
        e = self.emitter
        resume = e.new_label()
        action = nodes.tuple_of(kind, e.ref(resume), payload)
        e.terminate(nodes.return_small(action), successors=(resume,))
        e.mark(resume, e.suspension(what))
        return resume

    def code_of(self, node: cst.CSTNode) -> str:
        """``node``'s code, normalised (layout and comments dropped, the compiler's own
        variables unnumbered), so that it reads the same in any version of the function."""
        text = cst.Module([]).code_for_node(node)
        prefix = re.escape(self.emitter.prefix)
        text = re.sub(rf"\b{prefix}([A-Za-z_]*?)\d*\b", r"__\1", text)
        for mode in ("eval", "exec"):
            try:
                return ast.unparse(ast.parse(text.strip(), mode=mode))
            except SyntaxError:
                continue
        return " ".join(text.split())  # a fragment (a pattern, a target): its words

    # Branching expressions.
    def _boolean(self, expr: cst.BooleanOperation) -> cst.BaseExpression:
        result = self.emitter.temp()
        self.emitter.emit(nodes.assign(result, self.explode(expr.left)))
        end = self.emitter.new_label()
        skip = result if isinstance(expr.operator, cst.Or) else nodes.negate(result)
        self.emitter.branch(skip, end)
        self.emitter.emit(nodes.assign(result, self.explode(expr.right)))
        self.emitter.mark(end)
        return result

    def _conditional(self, expr: cst.IfExp) -> cst.BaseExpression:
        result = self.emitter.temp()
        otherwise, end = self.emitter.new_label(), self.emitter.new_label()
        self.emitter.branch(nodes.negate(self.explode(expr.test)), otherwise)
        self.emitter.emit(nodes.assign(result, self.explode(expr.body)))
        self.emitter.jump(end)
        self.emitter.mark(otherwise)
        self.emitter.emit(nodes.assign(result, self.explode(expr.orelse)))
        self.emitter.mark(end)
        return result

    def _comparison(self, expr: cst.Comparison) -> cst.BaseExpression:
        targets = expr.comparisons
        if not any(self.marks.suspends(t.comparator) for t in targets[1:]):
            left, first = self.explode_in_order([expr.left, targets[0].comparator])
            return expr.with_changes(
                left=nodes.parens(left),
                comparisons=[targets[0].with_changes(comparator=nodes.parens(first)), *targets[1:]],
            )
        # A later operand suspends: evaluate the chain link by link, stopping at the first false.
        result = self.emitter.temp()
        end = self.emitter.new_label()
        left = self.spill(self.explode(expr.left))
        for i, target in enumerate(targets):
            right = self.explode(target.comparator)
            if i < len(targets) - 1:
                right = self.spill(right)
            link = cst.Comparison(nodes.parens(left), [target.with_changes(comparator=nodes.parens(right))])
            self.emitter.emit(nodes.assign(result, link))
            if i < len(targets) - 1:
                self.emitter.branch(nodes.negate(result), end)
            left = right
        self.emitter.mark(end)
        return result

    # f-strings: each part before a suspending one is formatted before it.
    def _formatted(self, expr: cst.FormattedString) -> cst.BaseExpression:
        parts = list(expr.parts)
        last = max(i for i, part in enumerate(parts) if self.marks.suspends(part))
        result: list[cst.BaseFormattedStringContent] = []
        for i, part in enumerate(parts):
            if i > last or isinstance(part, cst.FormattedStringText):
                result.append(part)
                continue
            if part.equal is not None and self.marks.suspends(part):
                raise self.source.error("`await` inside a self-documenting f-string field `{expr=}`", part)
            part = self._format_part(part)
            if i < last:
                single = expr.with_changes(parts=[part])
                part = cst.FormattedStringExpression(self.spill(single))
            result.append(part)
        return expr.with_changes(parts=result)

    def _format_part(self, part: cst.FormattedStringExpression) -> cst.FormattedStringExpression:
        spec = list(part.format_spec or ())
        spec_exprs = [p.expression for p in spec if isinstance(p, cst.FormattedStringExpression)]
        value, *spec_values = self.explode_in_order([part.expression, *spec_exprs])
        values = iter(spec_values)
        new_spec = [
            p.with_changes(expression=next(values)) if isinstance(p, cst.FormattedStringExpression) else p
            for p in spec
        ]
        return part.with_changes(expression=value, format_spec=new_spec if part.format_spec else None)

    # Comprehensions become loops.
    def _comprehension(self, expr: cst.ListComp | cst.SetComp | cst.DictComp) -> cst.BaseExpression:
        result = self.emitter.temp()
        helper = self.emitter.helper
        if isinstance(expr, cst.ListComp):
            empty, add = cst.List([]), "append"
        elif isinstance(expr, cst.SetComp):
            empty, add = nodes.call(helper("set")), "add"
        else:
            empty, add = cst.Dict([]), "__setitem__"
        self.emitter.emit(nodes.assign(result, empty))
        renames: dict[str, str] = {}
        clauses: list[cst.CompFor] = []
        clause: cst.CompFor | None = expr.for_in
        while clause is not None:
            clauses.append(clause)
            clause = clause.inner_for_in
        loops: list[tuple[cst.CompFor, cst.BaseAssignTargetExpression, cst.BaseExpression]] = []
        for i, clause in enumerate(clauses):
            # The first iterable is evaluated in the enclosing scope, the rest in the comprehension's.
            iterable = clause.iter if i == 0 else rename(clause.iter, renames)
            for bound in _target_names(clause.target):
                renames[bound] = self.emitter.temp(f"the comprehension variable `{bound}`").value
            loops.append((clause, rename(clause.target, renames), iterable))
        if isinstance(expr, cst.DictComp):
            args = [rename(expr.key, renames), rename(expr.value, renames)]
        else:
            args = [rename(expr.elt, renames)]
        body: cst.BaseStatement = nodes.expression(
            cst.Call(nodes.attribute(result, add), [cst.Arg(nodes.parens(a)) for a in args])
        )
        for clause, target, iterable in reversed(loops):
            for condition in reversed(clause.ifs):
                body = nodes.if_(rename(condition.test, renames), [body])
            body = cst.For(target=target, iter=iterable, body=nodes.suite([body]),
                           asynchronous=clause.asynchronous)
        self.lower_statement(body)
        return result


def _target_names(target: cst.BaseExpression) -> list[str]:
    from .scope import target_names

    return list(target_names(target))


def rename(node: cst.CSTNodeT, renames: dict[str, str]) -> cst.CSTNodeT:
    """Rename comprehension variables in ``node``, respecting scopes nested inside it."""
    if not renames:
        return node
    return node.visit(_Renamer(renames))


class _Renamer(cst.CSTTransformer):
    def __init__(self, renames: dict[str, str]) -> None:
        self.renames = renames

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        new = self.renames.get(updated.value)
        return updated.with_changes(value=new) if new else updated

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        return updated.with_changes(attr=original.attr)  # an attribute name is not a variable

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def leave_Lambda(self, original: cst.Lambda, updated: cst.Lambda) -> cst.Lambda:
        shadowed = {p.name.value for p in _all_params(original.params)}
        inner = {k: v for k, v in self.renames.items() if k not in shadowed}
        return original.with_changes(
            params=original.params.visit(_DefaultsRenamer(self.renames)),
            body=rename(original.body, inner),
        )

    # A nested comprehension: its first iterable sees our names, the rest its own.
    def visit_ListComp(self, node: cst.ListComp) -> bool:
        return False

    visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

    def leave_ListComp(self, original: cst.ListComp, updated: cst.ListComp) -> cst.ListComp:
        return _rename_comprehension(original, self.renames)

    leave_SetComp = leave_DictComp = leave_GeneratorExp = leave_ListComp


class _DefaultsRenamer(cst.CSTTransformer):
    def __init__(self, renames: dict[str, str]) -> None:
        self.renames = renames

    def visit_Param(self, node: cst.Param) -> bool:
        return False

    def leave_Param(self, original: cst.Param, updated: cst.Param) -> cst.Param:
        if original.default is None:
            return original
        return original.with_changes(default=rename(original.default, self.renames))


def _rename_comprehension(node: cst.CSTNodeT, renames: dict[str, str]) -> cst.CSTNodeT:
    clauses: list[cst.CompFor] = []
    clause = node.for_in
    while clause is not None:
        clauses.append(clause)
        clause = clause.inner_for_in
    shadowed = {bound for c in clauses for bound in _target_names(c.target)}
    inner = {k: v for k, v in renames.items() if k not in shadowed}
    rebuilt: cst.CompFor | None = None
    for i, clause in reversed(list(enumerate(clauses))):
        rebuilt = clause.with_changes(
            iter=rename(clause.iter, renames if i == 0 else inner),
            ifs=[rename(c, inner) for c in clause.ifs],
            inner_for_in=rebuilt,
        )
    changes = {"for_in": rebuilt}
    for part in ("elt", "key", "value"):
        if hasattr(node, part):
            changes[part] = rename(getattr(node, part), inner)
    return node.with_changes(**changes)


def _all_params(params: cst.Parameters) -> list[cst.Param]:
    stars = [p for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)]
    return [*params.posonly_params, *params.params, *params.kwonly_params, *stars]


# How to take apart and rebuild every other expression that can contain an await:
# its children in CPython's evaluation order, how each is unpacked, and a rebuilder.
Rebuild = Callable[[list[cst.BaseExpression]], cst.BaseExpression]
Parts = tuple[list[cst.BaseExpression], list[str], Rebuild]


def _attribute(e: cst.Attribute) -> Parts:
    return [e.value], [""], lambda v: e.with_changes(value=nodes.parens(v[0]))


def _unary(e: cst.UnaryOperation) -> Parts:
    return [e.expression], [""], lambda v: e.with_changes(expression=nodes.parens(v[0]))


def _binary(e: cst.BinaryOperation) -> Parts:
    def build(v: list[cst.BaseExpression]) -> cst.BaseExpression:
        return e.with_changes(left=nodes.parens(v[0]), right=nodes.parens(v[1]))

    return [e.left, e.right], ["", ""], build


def _named(e: cst.NamedExpr) -> Parts:
    return [e.value], [""], lambda v: e.with_changes(value=nodes.parens(v[0]))


def _call(e: cst.Call) -> Parts:
    def build(v: list[cst.BaseExpression]) -> cst.BaseExpression:
        args = [a.with_changes(value=nodes.parens(x)) for a, x in zip(e.args, v[1:], strict=True)]
        return e.with_changes(func=nodes.parens(v[0]), args=args)

    return [e.func, *(a.value for a in e.args)], ["", *(a.star for a in e.args)], build


def _subscript(e: cst.Subscript) -> Parts:
    parts: list[cst.BaseExpression] = [e.value]
    for element in e.slice:
        if isinstance(element.slice, cst.Index):
            parts.append(element.slice.value)
        else:
            parts.extend(p for p in (element.slice.lower, element.slice.upper, element.slice.step) if p)

    def build(v: list[cst.BaseExpression]) -> cst.BaseExpression:
        values = iter(v[1:])
        elements = []
        for element in e.slice:
            s = element.slice
            if isinstance(s, cst.Index):
                s = s.with_changes(value=next(values))
            else:
                s = s.with_changes(**{k: next(values) for k in ("lower", "upper", "step") if getattr(s, k)})
            elements.append(element.with_changes(slice=s))
        return e.with_changes(value=nodes.parens(v[0]), slice=elements)

    return parts, [""] * len(parts), build


def _sequence(e: cst.Tuple | cst.List | cst.Set) -> Parts:
    def build(v: list[cst.BaseExpression]) -> cst.BaseExpression:
        return e.with_changes(
            elements=[el.with_changes(value=nodes.parens(x)) for el, x in zip(e.elements, v, strict=True)]
        )

    unpack = ["*" if isinstance(el, cst.StarredElement) else "" for el in e.elements]
    return [el.value for el in e.elements], unpack, build


def _dict(e: cst.Dict) -> Parts:
    parts: list[cst.BaseExpression] = []
    unpack: list[str] = []
    for el in e.elements:
        if isinstance(el, cst.DictElement):
            parts.extend([el.key, el.value])
            unpack.extend(["", ""])
        else:
            parts.append(el.value)
            unpack.append("**")

    def build(v: list[cst.BaseExpression]) -> cst.BaseExpression:
        values = iter(v)
        elements = []
        for el in e.elements:
            if isinstance(el, cst.DictElement):
                elements.append(el.with_changes(key=nodes.parens(next(values)), value=nodes.parens(next(values))))
            else:
                elements.append(el.with_changes(value=nodes.parens(next(values))))
        return e.with_changes(elements=elements)

    return parts, unpack, build


_CHILDREN: dict[type, Callable[..., Parts]] = {
    cst.Attribute: _attribute,
    cst.UnaryOperation: _unary,
    cst.BinaryOperation: _binary,
    cst.NamedExpr: _named,
    cst.Call: _call,
    cst.Subscript: _subscript,
    cst.Tuple: _sequence,
    cst.List: _sequence,
    cst.Set: _sequence,
    cst.Dict: _dict,
}
