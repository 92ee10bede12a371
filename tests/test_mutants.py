"""The differential harness catches the bug classes that anchors of this field shipped.

Each mutant puts one known lowering bug back into the compiler (evaluating both sides of
``and``/``or``, not spilling operands evaluated before an ``await``, skipping ``finally``
on a jump, keeping a stale completion record, dropping live variables from saves) and
checks that the corpus programs covering it now fail. A test suite that could not see
these would be no backstop.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst
import pytest
from harness import compare
from test_corpus import CASES

from durable.compiler import emitter, expressions, liveness, nodes


def _both_sides(self: expressions.ExpressionLowering, expr: cst.BooleanOperation) -> cst.BaseExpression:
    left, right = self.explode_in_order([expr.left, expr.right])
    return nodes.parens(expr.with_changes(left=nodes.parens(left), right=nodes.parens(right)))


def _no_spill(self: expressions.ExpressionLowering, expr: cst.BaseExpression, unpack: str = "") -> cst.BaseExpression:
    return expr


def _finally_skipped(self: emitter.Emitter, record: cst.BaseExpression, depth: int,
                     jump_target: int | None = None) -> list[cst.BaseSmallStatement]:
    if jump_target is not None:
        self._note_successor(jump_target)
        return [nodes.return_small(self.ref(jump_target))]
    return [nodes.return_small(record)]


def _nothing_live(blocks, codes, variables):  # type: ignore[no-untyped-def]
    live, captured = ORIGINAL_LIVENESS(blocks, codes, variables)
    return {pc: frozenset() for pc in live}, captured


ORIGINAL_LIVENESS = liveness.live_variables

MUTANTS: dict[str, tuple[object, str, Callable[..., object], list[str]]] = {
    "and/or evaluate both sides": (expressions.ExpressionLowering, "_boolean", _both_sides, ["short_circuit"]),
    "operands not spilled": (expressions.ExpressionLowering, "spill", _no_spill, ["evaluation_order"]),
    "finally skipped on return/break/continue": (emitter.Emitter, "route", _finally_skipped, ["finally_return_break_continue", "nested_finally_routing"]),
    "no variable saved": (liveness, "live_variables", _nothing_live, ["straight", "for_list"]),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
async def test_the_corpus_catches_the_mutant(mutant: str, tmp_path, monkeypatch) -> None:
    owner, attribute, replacement, cases = MUTANTS[mutant]
    if owner is liveness:
        from durable.compiler import pipeline

        monkeypatch.setattr(pipeline, "live_variables", replacement)
    else:
        monkeypatch.setattr(owner, attribute, replacement)
    for case in cases:
        with pytest.raises(AssertionError, match="durable"):
            await compare(CASES[case], tmp_path, entry="main")
