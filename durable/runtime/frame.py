"""FunctionCall: one call of a durable function, as plain data that can be saved."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import IncompatibleStateError
from .code import CompiledFunction
from .migration import PINNED, CannotMove, Position, Restoring, move


class _Cells(dict):
    """Frame variables by name, with the runtime helpers' shared cells behind them.

    A variable never bound yet gets an empty cell when first needed.
    """

    __slots__ = ("helpers",)

    def __missing__(self, name: str) -> types.CellType:
        cell = self.helpers.get(name)
        if cell is None:
            cell = self[name] = types.CellType()
        return cell


def _moved(function: CompiledFunction, position: str | None, values: dict[str, Any],
           restoring: Restoring) -> tuple[int, dict[str, Any]]:
    """The frame of an older (or newer) version of ``function``, moved onto this one."""
    if position is None:
        why = "it was saved by a release of durable that did not record its resume point"
    elif not restoring.migrate:
        why = PINNED
    else:
        try:
            old = Position.from_json(position)
            pc, moved = move(old, function, values, restoring.instance_id)
        except CannotMove as error:
            why = str(error)
        else:
            restoring.moved.append((function.qualname, old.line, function.line_of(pc)))
            return pc, moved
    raise IncompatibleStateError(
        f"the code of {function.qualname}() ({function.filename}) changed after this instance "
        f"saved a frame of it, and the frame cannot move onto the new code: {why}. The instance "
        "waits, intact, for a worker that has the code it was saved with.",
        function=function.qualname, code_changed=True,
    )


class FunctionCall:
    """A frame: which function, where it stands (``pc``), its variables, what it is being handed.

    Its code blocks are bound to its cells lazily, once per frame.
    ``delivery`` is the outcome of the await it stands after (a value or a
    ``Thrown``), kept until the frame runs again, so a saved frame that
    received a result does not lose it. ``awaiting`` is the primitive (a
    timer, an event wait, a step) it awaits, with its progress, until that
    delivers.
    """

    __slots__ = ("_bound", "awaiting", "cells", "delivery", "function", "inherited", "pc")

    def __init__(self, function: CompiledFunction, arguments: Mapping[str, Any], pc: int = 0,
                 shared: Mapping[str, types.CellType] | None = None) -> None:
        """``shared``: cells that are also someone else's (a closure's free variables)."""
        self.function = function
        self.cells = _Cells({name: types.CellType(value) for name, value in arguments.items()})
        self.cells.helpers = function.helper_cells
        if shared:
            self.cells.update(shared)
        self.pc = pc
        self.delivery: Any = None
        self.awaiting: Any = None
        self.inherited: tuple[BaseException, ...] = ()  # being handled by the callers
        self._bound: list[Callable[[Any], Any] | None] = [None] * len(function.blocks)

    def block(self, pc: int) -> Callable[[Any], Any]:
        bound = self._bound[pc]
        if bound is None:
            code = self.function.blocks[pc].code
            closure = tuple(map(self.cells.__getitem__, code.co_freevars))
            bound = self._bound[pc] = types.FunctionType(code, self.function.globals, None, None, closure)
        return bound

    @property
    def line(self) -> int:
        return self.function.line_of(self.pc)

    def saved_variables(self) -> tuple[dict[str, Any], dict[str, types.CellType]]:
        """The live variables at ``pc``: values, and the cells closures may share.

        A captured cell is saved even while unbound: a closure made before the suspension
        holds it, and must see the value assigned after it.
        """
        values: dict[str, Any] = {}
        shared: dict[str, types.CellType] = {}
        captured = self.function.captured
        for name in self.function.blocks[self.pc].live:
            cell = self.cells.get(name)
            if cell is None:
                continue
            if name in captured:
                shared[name] = cell
                continue
            try:
                values[name] = cell.cell_contents
            except ValueError:  # not bound
                continue
        return values, shared

    def saved_state(self) -> tuple[Any, ...]:
        """The frame as plain data (no class to look up when pickled: that is the slow part)."""
        values, shared = self.saved_variables()
        function = self.function
        return (function.key, function.fingerprint, self.pc, values, shared, self.delivery,
                self.awaiting)

    @classmethod
    def restore(cls, state: tuple[Any, ...], restoring: Restoring) -> FunctionCall:
        """The frame ``state`` saved, on the code this process has: as it was if the code is
        the same, else moved onto it (``migration``) or refused (``IncompatibleStateError``)."""
        from ..compiler.registry import current

        key, fingerprint, pc, values, shared, delivery, awaiting = state
        function = current(key)
        position = restoring.next_position()  # None: saved before states recorded positions
        if fingerprint != (function.fingerprint if position else function.source_fingerprint):
            pc, values = _moved(function, position, values, restoring)
        frame = cls(function, values, pc, shared)
        frame.delivery = delivery
        frame.awaiting = awaiting
        return frame

    def __repr__(self) -> str:
        return f"<FunctionCall {self.function.qualname} at line {self.line} (block {self.pc})>"

