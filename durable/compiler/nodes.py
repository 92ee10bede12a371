"""Small constructors for the libcst nodes the lowering emits."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

ATOMS = (cst.Name, cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.Ellipsis)


def name(value: str) -> cst.Name:
    return cst.Name(value)


def integer(value: int) -> cst.Integer:
    return cst.Integer(str(value))


def parens(expr: cst.BaseExpression) -> cst.BaseExpression:
    """``expr`` safe to nest anywhere (libcst prints trees literally, precedence is ours)."""
    if isinstance(expr, ATOMS) or expr.lpar:
        return expr
    if isinstance(expr, cst.Call | cst.Attribute | cst.Subscript | cst.List | cst.Dict | cst.Set):
        return expr
    return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def tuple_of(*items: cst.BaseExpression) -> cst.Tuple:
    return cst.Tuple([cst.Element(parens(item)) for item in items])


def call(func: cst.BaseExpression, *args: cst.BaseExpression) -> cst.Call:
    return cst.Call(func=func, args=[cst.Arg(parens(arg)) for arg in args])


def attribute(value: cst.BaseExpression, attr: str) -> cst.Attribute:
    return cst.Attribute(value=parens(value), attr=cst.Name(attr))


def negate(expr: cst.BaseExpression) -> cst.UnaryOperation:
    return cst.UnaryOperation(cst.Not(), parens(expr))


def is_none(expr: cst.BaseExpression) -> cst.Comparison:
    return cst.Comparison(parens(expr), [cst.ComparisonTarget(cst.Is(), cst.Name("None"))])


def equals(left: cst.BaseExpression, right: cst.BaseExpression) -> cst.Comparison:
    return cst.Comparison(parens(left), [cst.ComparisonTarget(cst.Equal(), parens(right))])


def line(*small: cst.BaseSmallStatement) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine(list(small))


def assign_small(target: cst.BaseAssignTargetExpression, value: cst.BaseExpression) -> cst.Assign:
    return cst.Assign([cst.AssignTarget(target)], value)


def assign(target: cst.BaseAssignTargetExpression, value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return line(assign_small(target, value))


def expression(value: cst.BaseExpression) -> cst.SimpleStatementLine:
    return line(cst.Expr(value))


def return_small(value: cst.BaseExpression | None) -> cst.Return:
    return cst.Return(value)


def if_(test: cst.BaseExpression, body: Sequence[cst.BaseStatement],
        orelse: Sequence[cst.BaseStatement] = ()) -> cst.If:
    return cst.If(
        test=test,
        body=cst.IndentedBlock(list(body)),
        orelse=cst.Else(cst.IndentedBlock(list(orelse))) if orelse else None,
    )


def if_then(test: cst.BaseExpression, *small: cst.BaseSmallStatement) -> cst.If:
    """``if test: <small statements>`` on one line."""
    return cst.If(test=test, body=cst.SimpleStatementSuite(list(small)))


def suite(statements: Sequence[cst.BaseStatement]) -> cst.IndentedBlock:
    return cst.IndentedBlock(list(statements) or [line(cst.Pass())])
