"""Let a ``try`` or ``with`` kept native see ``UnboundLocalError`` where Python raises it.

A block reads the function's variables from closure cells, so an unbound one
raises ``NameError: cannot access free variable``; the trampoline converts it
(``helpers.unbound_local``) for what reaches it, but a native ``try`` matches its
handlers, and a native ``with`` calls ``__exit__``, before that. Their body is
wrapped so the error is converted first::

    try:                                  try:
        BODY                                  try:
    except UnboundLocalError:                     BODY
        ...                       ->          except NameError as caught:
                                                  unbound = unbound_local(caught, LOCALS)
                                                  if unbound is None:
                                                      raise
                                              if unbound is not None:
                                                  unbound, raising = None, unbound
                                                  raise raising
                                          except UnboundLocalError:
                                              ...

The converted error is raised after the inner handler, so its ``__context__`` is
what Python gives it; that raise adds one traceback entry, on the first line of
the ``try`` or ``with``. ``unbound`` is set once when the block starts: the
normal path costs one test. Runs on the positioned ``ast`` (every added node is
placed on the first line of the statement it wraps), so the user's lines stay
where they are.
"""

from __future__ import annotations

import ast
import linecache


def convert_unbound_locals(blocks: list[ast.FunctionDef], prefix: str, local_names: frozenset[str],
                           filename: str) -> None:
    """Wrap the body of every native ``try`` and ``with`` in ``blocks`` that reads a local."""
    for block in blocks:
        wrapper = _Wrapper(prefix, local_names, filename)
        block.body = [wrapper.visit(statement) for statement in block.body]
        if wrapper.wrapped:
            block.body.insert(0, wrapper.at(block.body[0], ast.Assign(
                [ast.Name(wrapper.unbound, ast.Store())], ast.Constant(None))))


class _Wrapper(ast.NodeTransformer):
    def __init__(self, prefix: str, local_names: frozenset[str], filename: str) -> None:
        self.prefix = prefix
        self.filename = filename
        self.local_names = local_names
        self.unbound = f"{prefix}unbound"
        self.wrapped = False

    def visit_FunctionDef(self, node: ast.AST) -> ast.AST:
        return node  # another scope: its variables are its own

    visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = visit_FunctionDef

    def visit_Try(self, node: ast.Try | ast.TryStar | ast.With) -> ast.AST:
        """A ``try`` (``except*``, ``with``): its body converted before its handlers run."""
        self.generic_visit(node)
        if self._reads_local(node.body):
            node.body = self._converting(node.body, node)
            self.wrapped = True
        return node

    visit_TryStar = visit_With = visit_Try

    def _reads_local(self, body: list[ast.stmt]) -> bool:
        for statement in body:
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and node.id in self.local_names and (
                        not isinstance(node.ctx, ast.Store)):
                    return True
                if (isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name)
                        and node.target.id in self.local_names):
                    return True
        return False

    def _converting(self, body: list[ast.stmt], at: ast.stmt) -> list[ast.stmt]:
        prefix, unbound = self.prefix, self.unbound
        caught, raising = f"{prefix}caught", f"{prefix}raising"
        names = ast.Tuple([ast.Constant(name) for name in sorted(self.local_names)], ast.Load())
        convert = ast.Assign([ast.Name(unbound, ast.Store())], ast.Call(
            ast.Name(f"{prefix}unbound_local", ast.Load()), [ast.Name(caught, ast.Load()), names], []))
        is_none = ast.Compare(ast.Name(unbound, ast.Load()), [ast.Is()], [ast.Constant(None)])
        handler = ast.ExceptHandler(ast.Name(f"{prefix}NameError", ast.Load()), caught,
                                    [convert, ast.If(is_none, [ast.Raise()], [])])
        take = ast.Assign(
            [ast.Tuple([ast.Name(unbound, ast.Store()), ast.Name(raising, ast.Store())], ast.Store())],
            ast.Tuple([ast.Constant(None), ast.Name(unbound, ast.Load())], ast.Load()))
        is_set = ast.Compare(ast.Name(unbound, ast.Load()), [ast.IsNot()], [ast.Constant(None)])
        raise_after = ast.If(is_set, [take, ast.Raise(ast.Name(raising, ast.Load()))], [])
        return [self.at(at, ast.Try(body, [handler], [], [])), self.at(at, raise_after)]

    def at(self, statement: ast.stmt, node: ast.stmt) -> ast.stmt:
        """``node`` and all in it placed on the whole first line of ``statement`` (no caret
        drawn under it in a traceback)."""
        line = statement.lineno
        end = len(linecache.getline(self.filename, line).rstrip())
        for part in ast.walk(node):
            if "lineno" in part._attributes and getattr(part, "lineno", None) is None:
                part.lineno, part.col_offset = line, statement.col_offset
                part.end_lineno, part.end_col_offset = line, max(end, statement.col_offset)
        return node
