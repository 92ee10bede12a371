"""Lower a function body into the block listing (the compiler's main pass).

Statements with no suspension point are emitted as they are (see
``verbatim``). Statements that contain one are taken apart: their
expressions through ``ExpressionLowering``, their control flow into blocks
and jumps, one construct per method, each with a line saying what it
becomes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import libcst as cst

from ..runtime.actions import PAUSE
from . import nodes
from .emitter import Block, Emitter, FinallyRegion, Handler, Loop, Owner
from .expressions import ExpressionLowering
from .marks import SuspensionMarks, is_static_pause
from .source import FunctionSource
from .verbatim import VerbatimRewriter, unannotated


class DurableAstTransformer(ExpressionLowering):
    """Turns one ``async def`` into numbered code blocks (see ``emitter.Block``)."""

    def __init__(self, source: FunctionSource, prefix: str, marks: SuspensionMarks | None = None) -> None:
        self.source = source
        self.marks = marks or SuspensionMarks()
        self.emitter = Emitter(prefix)
        self.described: dict[cst.CSTNode, str] = {}
        self.awaited_names: set[str] = set()

    def transform(self) -> tuple[list[Block], dict[int, int]]:
        """Lower the whole body into blocks numbered from 0 (the entry); see ``Emitter.finish``."""
        emitter = self.emitter
        emitter.line = self.source.line_of(self.source.function)
        entry = emitter.new_label()
        emitter.mark(entry)
        self.lower_body(self.source.function.body)
        if emitter.current is not None and not emitter.current.terminated:
            emitter.terminate(*emitter.route_return(None))
        return emitter.finish(entry)

    # Statements.
    def lower_body(self, suite: cst.BaseSuite) -> None:
        """Lower a block of statements (``if x: a; b`` on one line included)."""
        if isinstance(suite, cst.SimpleStatementSuite):
            for small in suite.body:
                self.at(small)
                if self.marks.suspends(small):
                    with self._statement(small):
                        self._small(small)
                else:
                    self._verbatim(nodes.line(small), original=small)
            return
        for statement in suite.body:
            self.lower_statement(statement)

    def lower_statement(self, statement: cst.BaseStatement) -> None:
        self.at(statement)
        if not self.marks.suspends(statement):
            self._verbatim(statement)
        elif isinstance(statement, cst.SimpleStatementLine):
            self.lower_body(cst.SimpleStatementSuite(statement.body))
        elif isinstance(statement, cst.If):
            self._if(statement)
        elif isinstance(statement, cst.While):
            self._while(statement)
        elif isinstance(statement, cst.For):
            self._for(statement)
        elif isinstance(statement, cst.Try):
            self._try(statement)
        elif isinstance(statement, cst.With):
            self._with(statement)
        elif isinstance(statement, cst.Match):
            self._match(statement)
        else:
            raise self.source.error(f"a suspension point inside {type(statement).__name__}", statement)

    # Owners: what the frame variables made while lowering belong to (see ``emitter.Owner``).
    def _construct(self, node: cst.CSTNode, signature: str) -> AbstractContextManager[Owner | None]:
        """Lower inside the user's construct ``node`` (one the compiler wrote owns nothing: what
        it makes belongs to the construct or statement it was written for)."""
        if node not in self.source.positions:
            return nullcontext()
        return self.emitter.owned(Owner(signature))

    def _statement(self, node: cst.CSTNode, code: str | None = None) -> AbstractContextManager[Owner]:
        """Lower a statement, or a construct's header, that has its own values to spill."""
        return self.emitter.owned(Owner(code or self.code_of(node), is_statement=True))

    def _verbatim(self, statement: cst.BaseStatement, original: cst.CSTNode | None = None) -> None:
        original = original or statement
        rewritten = statement.visit(VerbatimRewriter(self.emitter))
        verbatim = original in self.source.positions
        self.emitter.emit(rewritten, verbatim=verbatim)

    def _small(self, small: cst.BaseSmallStatement) -> None:
        e = self.emitter
        if isinstance(small, cst.Expr):
            # rewrite: side effects of the value, the value itself dropped
            residual = self.explode(small.value, ignore_result=True)
            if not self._is_temp(residual) and not (isinstance(residual, cst.Name) and residual.value == "None"):
                e.emit(nodes.expression(residual))
        elif isinstance(small, cst.Assign):
            self._assign(small)
        elif isinstance(small, cst.AugAssign):
            self._augmented(small)
        elif isinstance(small, cst.AnnAssign):
            # rewrite: `x: T = v` -> `x = v` (a local annotation is never evaluated)
            for part in unannotated(small):
                if self.marks.suspends(part):
                    self._small(part)
                else:
                    self.emitter.emit(nodes.line(part))
        elif isinstance(small, cst.Return):
            value = self.explode(small.value) if small.value is not None else None
            e.terminate(*e.route_return(value))
        elif isinstance(small, cst.Raise):
            self._raise(small)
        elif isinstance(small, cst.Assert):
            # rewrite: `assert t, m` -> `if __debug__: if not t: raise AssertionError(m)`
            failure = nodes.call(cst.Name("AssertionError"), small.msg) if small.msg else cst.Name("AssertionError")
            check = nodes.if_(nodes.negate(small.test), [nodes.line(cst.Raise(failure))])
            self.lower_statement(nodes.if_(cst.Name("__debug__"), [check]))
        elif isinstance(small, cst.Del):
            # rewrite: the target's parts are exploded in order, then deleted
            e.emit(nodes.line(cst.Del(self._target(small.target))))
        else:
            raise self.source.error(f"a suspension point inside {type(small).__name__}", small)

    # Assignments.
    def _assign(self, node: cst.Assign) -> None:
        # rewrite: value first, then each target left to right, its parts evaluated just before it
        value = self.explode(node.value)
        targets = [t.target for t in node.targets]
        if not any(self.marks.suspends(t) for t in targets):
            self.emitter.emit(nodes.line(node.with_changes(
                targets=[cst.AssignTarget(t) for t in targets], value=value)))
            return
        value = self.spill(value)
        for target in targets:
            self._store(target, value)

    def _store(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        if not self.marks.suspends(target):
            self.emitter.emit(nodes.assign(target, value))
        elif isinstance(target, cst.Tuple | cst.List):
            # rewrite: unpack into temporaries, then store each element in order
            temps = [self.emitter.temp() for _ in target.elements]
            elements = [
                cst.StarredElement(t) if isinstance(el, cst.StarredElement) else cst.Element(t)
                for t, el in zip(temps, target.elements, strict=True)
            ]
            self.emitter.emit(nodes.assign(cst.Tuple(elements), value))
            for temp, el in zip(temps, target.elements, strict=True):
                self._store(el.value, temp)
        else:
            self.emitter.emit(nodes.assign(self._target(target), value))

    def _target(self, target: cst.BaseExpression) -> cst.BaseExpression:
        """A target whose object and index are evaluated now; the store or delete comes later."""
        if not self.marks.suspends(target):
            return target
        if isinstance(target, cst.Attribute):
            return target.with_changes(value=nodes.parens(self.explode(target.value)))
        if isinstance(target, cst.Subscript):
            return self.explode(target)  # object, then index; the subscript itself is not read
        if isinstance(target, cst.Tuple | cst.List):
            return target.with_changes(elements=[
                el.with_changes(value=self._target(el.value)) for el in target.elements
            ])
        raise self.source.error("`await` inside this assignment target", target)

    def _augmented(self, node: cst.AugAssign) -> None:
        # rewrite: `t op= v` -> read t's parts and current value, explode v, then `t = ops.iop(cur, v)`
        target = node.target
        if isinstance(target, cst.Name):
            holder, current = None, self.spill(target)
        elif isinstance(target, cst.Attribute):
            holder = self.spill(self.explode(target.value))
            current = self.spill(target.with_changes(value=holder))
        elif isinstance(target, cst.Subscript):
            holder = self.spill(self.explode(target.value))
            [index] = self.explode_in_order([_index_expr(target, self.emitter.helper("slice"))])
            index = self.spill(index)
            current = self.spill(_with_index(target.with_changes(value=holder), index))
        else:  # pragma: no cover - the parser allows nothing else
            raise self.source.error("this augmented assignment target", target)
        value = self.explode(node.value)
        operation = nodes.attribute(self.emitter.helper("ops"), _INPLACE[type(node.operator)])
        result = nodes.call(operation, current, value)
        if isinstance(target, cst.Name):
            store = target
        elif isinstance(target, cst.Attribute):
            store = target.with_changes(value=holder)
        else:
            store = _with_index(target.with_changes(value=holder), index)
        self.emitter.emit(nodes.assign(store, result))

    # Raising and pausing.
    def _raise(self, node: cst.Raise) -> None:
        if is_static_pause(node):
            # rewrite: `raise PauseForEventException(e)` -> return (PAUSE, resume, exc); resume after it
            if node.cause is None:
                exc = self.explode(node.exc)
            else:
                exc, cause = self.explode_in_order([node.exc, node.cause.item])
                self.emitter.emit(nodes.expression(cause))
            pause = self.emitter.local("pause")
            helper = self.emitter.helper
            self.emitter.emit(nodes.assign(pause, exc))
            self.emitter.emit(nodes.if_then(
                nodes.negate(nodes.call(helper("isinstance"), pause, helper("Pause"))), cst.Raise(pause)))
            self.resume_point(nodes.integer(PAUSE), pause, f"raise {self.code_of(node.exc)}")
            value = cst.Name(f"{self.emitter.prefix}V")
            thrown = cst.Comparison(nodes.call(helper("type"), value),
                                    [cst.ComparisonTarget(cst.Is(), helper("Thrown"))])
            self.emitter.emit(nodes.if_then(thrown, cst.Raise(nodes.attribute(value, "error"))))
            return
        # rewrite: exception, then cause, evaluated in order before raising
        if node.cause is None:
            exc = self.explode(node.exc)
            self.emitter.terminate(cst.Raise(exc))
        else:
            exc, cause = self.explode_in_order([node.exc, node.cause.item])
            self.emitter.terminate(cst.Raise(exc, node.cause.with_changes(item=cause)))

    # Control flow.
    def _if(self, node: cst.If) -> None:
        # rewrite: if not test: goto else; body; goto end; else: orelse; end:
        e = self.emitter
        otherwise, end = e.new_label(), e.new_label()
        with self._statement(node.test, f"if {self.code_of(node.test)}"):
            e.branch(nodes.negate(self.explode(node.test)), otherwise)
        self.lower_body(node.body)
        e.jump(end)
        e.mark(otherwise)
        if isinstance(node.orelse, cst.If):
            self.lower_statement(node.orelse)
        elif node.orelse is not None:
            self.lower_body(node.orelse.body)
        e.mark(end)

    def _while(self, node: cst.While) -> None:
        # rewrite: head: if not test: goto else; body; goto head; else: orelse; end:
        e = self.emitter
        head, otherwise, end = e.new_label(), e.new_label(), e.new_label()
        with self._construct(node, f"while {self.code_of(node.test)}") as owner:
            e.mark(head)
            self.at(node.test)
            _part(owner, "test")
            with self._statement(node.test):
                e.branch(nodes.negate(self.explode(node.test)), otherwise)
            self._loop_body(node, owner, head, otherwise, end)
        e.mark(end)

    def _for(self, node: cst.For) -> None:
        # rewrite: it = iter(x); head: try: v = next(it) except StopIteration: goto else;
        #          target = v; body; goto head; else: orelse; end:
        # (async: it = aiter(x); head: v = await anext(it), StopAsyncIteration -> else)
        e = self.emitter
        helper = e.helper
        is_async = node.asynchronous is not None
        header = f"for {self.code_of(node.target)} in {self.code_of(node.iter)}"
        head, otherwise, end = e.new_label(), e.new_label(), e.new_label()
        with self._construct(node, header) as owner:
            iterator = e.temp("the iterator of the `for` loop")
            with self._statement(node.iter, header):
                e.emit(nodes.assign(iterator, nodes.call(helper("aiter" if is_async else "iter"),
                                                         self.explode(node.iter))))
            e.mark(head)
            self.at(node.target)
            _part(owner, "next")
            with self._statement(node.target, header):
                if is_async:
                    item = self.await_value(nodes.call(helper("anext"), iterator), on_stop=otherwise,
                                            what=f"anext({self.code_of(node.iter)})")
                else:
                    item = e.temp() if self.marks.suspends(node.target) else e.local("item")
                    step = cst.Try(
                        body=nodes.suite([nodes.assign(item, nodes.call(helper("next"), iterator))]),
                        handlers=[cst.ExceptHandler(
                            body=nodes.suite([nodes.line(nodes.return_small(e.ref(otherwise)))]),
                            type=helper("StopIteration"),
                        )],
                    )
                    e.emit(step)
                    e.current.successors.add(otherwise)
                self._store(node.target, item)
            self._loop_body(node, owner, head, otherwise, end)
        e.mark(end)

    def _loop_body(self, node: cst.While | cst.For, owner: Owner | None, head: int, otherwise: int,
                   end: int) -> None:
        """The body (``break`` goes to ``end``, ``continue`` and its end to ``head``), then at
        ``otherwise`` the ``else`` clause."""
        e = self.emitter
        _part(owner, "body")
        e.loops.append(Loop(end, head, len(e.finally_regions)))
        self.lower_body(node.body)
        e.jump(head)
        e.loops.pop()
        e.mark(otherwise)
        if node.orelse is not None:
            _part(owner, "else")
            self.lower_body(node.orelse.body)

    def _try(self, node: cst.Try) -> None:
        # rewrite: a try region: its blocks name their handler (except dispatch, then finally);
        # `finally` runs with a completion record and continues it at its end
        with self._construct(node, "try") as owner:
            self._try_parts(node, owner)

    def _try_parts(self, node: cst.Try, owner: Owner | None) -> None:
        e = self.emitter
        after = e.new_label()
        region = None
        if node.finalbody is not None:
            region = FinallyRegion(record=e.temp("the exception or return a `finally` clause continues").value, label=e.new_label())
            e.emit(nodes.assign(cst.Name(region.record), cst.Name("None")))
            e.finally_regions.append(region)
            e.handlers.append(Handler(region.label, region.record, is_finally=True))
        caught = dispatch = None
        if node.handlers:
            caught, dispatch = e.temp("the exception being handled").value, e.new_label()
            e.handlers.append(Handler(dispatch, caught, is_finally=False))
        _part(owner, "body")
        e.mark(e.new_label())
        self.lower_body(node.body)
        if node.handlers:
            e.handlers.pop()
        if node.orelse is not None:
            _part(owner, "else")
            e.mark(e.new_label())
            self.lower_body(node.orelse.body)
        leave = region.label if region is not None else after
        e.jump(leave)
        if node.handlers:
            self._handlers(node.handlers, caught, dispatch, leave, owner)
        if region is not None:
            e.handlers.pop()
            e.finally_regions.pop()
            e.handling.append((region.record, True))
            self.at(node.finalbody)
            _part(owner, "finally")
            e.mark(region.label)
            self.lower_body(node.finalbody.body)
            e.end_finally(region, after)
            e.handling.pop()
        e.mark(after)

    def _handlers(self, handlers: tuple[cst.ExceptHandler, ...], caught: str, dispatch: int,
                  leave: int, owner: Owner | None) -> None:
        # rewrite: dispatch: if matches(exc, E1): goto h1 ...; else re-raise exc
        e = self.emitter
        e.handling.append((caught, False))
        self.at(handlers[0])
        e.mark(dispatch)
        labels = [e.new_label() for _ in handlers]
        for handler, label in zip(handlers, labels, strict=True):
            if handler.type is None:
                e.jump(label)
                break
            e.branch(nodes.call(e.helper("matches"), cst.Name(caught), handler.type), label)
        else:
            e.terminate(nodes.return_small(nodes.tuple_of(nodes.integer(2), cst.Name(caught))))
        for handler, label in zip(handlers, labels, strict=True):
            self.at(handler)
            _part(owner, self._clause(handler))
            e.mark(label)
            if handler.name is None:
                self.lower_body(handler.body)
            else:
                # rewrite: `except E as n: body` -> n = exc; try: body finally: n = None; del n
                bound = handler.name.name
                e.emit(nodes.assign(bound, cst.Name(caught)))
                cleanup = [nodes.assign(bound, cst.Name("None")), nodes.line(cst.Del(bound))]
                self.lower_statement(cst.Try(
                    body=handler.body,
                    finalbody=cst.Finally(nodes.suite(cleanup)),
                ))
            e.jump(leave)
        e.handling.pop()

    def _with(self, node: cst.With) -> None:
        # rewrite (PEP 343): mgr = E; exit, value = enter(mgr); ok = True
        #   try: try: target = value; body
        #        except BaseException: ok = False; if not exit(*exc_info()): raise
        #   finally: if ok: exit(None, None, None)
        # (async: aenter/aexit, each call awaited)
        item, rest = node.items[0], node.items[1:]
        body = _statements(node.body) if not rest else [node.with_changes(items=rest)]
        is_async = node.asynchronous is not None
        header = f"with {self.code_of(item)}"
        with self._construct(node, header):
            self._with_item(item, body, is_async, header)

    def _with_item(self, item: cst.WithItem, body: list[cst.BaseStatement], is_async: bool,
                   header: str) -> None:
        e = self.emitter
        helper = e.helper
        manager, exit_ = e.temp("the context manager of the `with`"), e.temp("the context manager of the `with`")
        value, ok = e.temp(), e.temp()
        self.at(item)
        with self._statement(item, header):
            e.emit(nodes.assign(manager, self.explode(item.item)))
        enter = nodes.call(helper("aenter" if is_async else "enter"), manager)
        e.emit(nodes.assign(cst.Tuple([cst.Element(exit_), cst.Element(value)]), enter))
        if is_async:
            e.emit(nodes.assign(value, self.await_value(value, what=f"aenter({self.code_of(item.item)})")))
        e.emit(nodes.assign(ok, cst.Name("True")))

        def exit_call(*args: cst.BaseExpression) -> cst.BaseExpression:
            result = cst.Call(exit_, [cst.Arg(a) for a in args])
            return self._exiting(cst.Await(result), item) if is_async else result

        bind = [nodes.assign(item.asname.name, value)] if item.asname is not None else []
        suppress = cst.Call(exit_, [cst.Arg(nodes.call(helper("exc_info")), star="*")])
        on_error = [
            nodes.assign(ok, cst.Name("False")),
            nodes.if_then(nodes.negate(self._exiting(cst.Await(suppress), item) if is_async else suppress),
                          cst.Raise()),
        ]
        inner = cst.Try(
            body=nodes.suite([*bind, *body]),
            handlers=[cst.ExceptHandler(body=nodes.suite(on_error), type=helper("BaseException"))],
        )
        none = cst.Name("None")
        cleanup = nodes.if_then(ok, cst.Expr(exit_call(none, none, none)))
        self.lower_statement(cst.Try(body=nodes.suite([inner]),
                                     finalbody=cst.Finally(nodes.suite([cleanup]))))

    def _exiting(self, awaited: cst.Await, item: cst.WithItem) -> cst.Await:
        """An ``await`` of the manager's ``__aexit__``, named for the resume point's id."""
        self.described[awaited.expression] = f"aexit({self.code_of(item.item)})"
        return awaited

    def _clause(self, handler: cst.ExceptHandler) -> str:
        """``except ValueError as error``: a part of a ``try``."""
        kind = f" {self.code_of(handler.type)}" if handler.type is not None else ""
        name = f" as {self.code_of(handler.name.name)}" if handler.name is not None else ""
        return f"except{kind}{name}"

    def _match(self, node: cst.Match) -> None:
        # rewrite: s = subject; for each case: ok = False; match s: case P: ok = True
        #          if not ok: goto next; if not guard: goto next; body; goto end
        e = self.emitter
        header = f"match {self.code_of(node.subject)}"
        end = e.new_label()
        with self._construct(node, header) as owner:
            subject = e.temp("the subject of the `match`")
            with self._statement(node.subject, header):
                e.emit(nodes.assign(subject, self.explode(node.subject)))
            for case in node.cases:
                self.at(case)
                clause = f"case {self.code_of(case.pattern)}"
                if case.guard is not None:
                    clause += f" if {self.code_of(case.guard)}"
                _part(owner, clause)
                following = e.new_label()
                ok = e.local("matched")
                e.emit(nodes.assign(ok, cst.Name("False")))
                e.emit(cst.Match(subject=subject, cases=[
                    cst.MatchCase(pattern=case.pattern, body=nodes.suite([nodes.assign(ok, cst.Name("True"))]))
                ]), verbatim=False)
                e.branch(nodes.negate(ok), following)
                if case.guard is not None:
                    with self._statement(case.guard, clause):
                        e.branch(nodes.negate(self.explode(case.guard)), following)
                self.lower_body(case.body)
                e.jump(end)
                e.mark(following)
        e.mark(end)


_INPLACE = {
    cst.AddAssign: "iadd", cst.SubtractAssign: "isub", cst.MultiplyAssign: "imul",
    cst.MatrixMultiplyAssign: "imatmul", cst.DivideAssign: "itruediv",
    cst.FloorDivideAssign: "ifloordiv", cst.ModuloAssign: "imod", cst.PowerAssign: "ipow",
    cst.LeftShiftAssign: "ilshift", cst.RightShiftAssign: "irshift",
    cst.BitAndAssign: "iand", cst.BitOrAssign: "ior", cst.BitXorAssign: "ixor",
}


def _part(owner: Owner | None, part: str) -> None:
    """Lowering has moved on to ``part`` of the construct ``owner`` (if the user wrote it)."""
    if owner is not None:
        owner.part = part


def _statements(suite: cst.BaseSuite) -> list[cst.BaseStatement]:
    if isinstance(suite, cst.SimpleStatementSuite):
        return [nodes.line(small) for small in suite.body]
    return list(suite.body)


def _index_expr(target: cst.Subscript, slice_: cst.Name) -> cst.BaseExpression:
    """The whole index of ``a[i]`` / ``a[i, j]`` / ``a[x:y]`` as one expression."""
    if len(target.slice) == 1 and isinstance(target.slice[0].slice, cst.Index):
        return target.slice[0].slice.value
    parts = []
    for element in target.slice:
        s = element.slice
        if isinstance(s, cst.Index):
            parts.append(s.value)
        else:
            bounds = (s.lower, s.upper, s.step)
            parts.append(cst.Call(slice_, [cst.Arg(p or cst.Name("None")) for p in bounds]))
    return parts[0] if len(parts) == 1 else nodes.tuple_of(*parts)


def _with_index(target: cst.Subscript, index: cst.BaseExpression) -> cst.Subscript:
    return target.with_changes(slice=[cst.SubscriptElement(cst.Index(index))])
