"""Unit tests of the compiler passes, each on its own."""

from __future__ import annotations

import asyncio
import dis
import textwrap
from pathlib import Path

import libcst as cst
from harness import load_module

from durable.compiler import registry
from durable.compiler.marks import SuspensionMarks, is_static_pause
from durable.compiler.pipeline import compile_code
from durable.compiler.scope import analyse, reserved_prefix
from durable.compiler.source import fingerprint, read_source


def function_node(source: str) -> cst.FunctionDef:
    return cst.parse_module(textwrap.dedent(source)).body[0]


def compiled(source: str, tmp_path, name: str = "main"):
    module = load_module(source, tmp_path, durable=True)
    fn = getattr(module, name)
    return compile_code(fn.__code__, fn.__globals__), module


# --- source ------------------------------------------------------------------------------------
def test_fingerprint_ignores_comments_and_layout_but_not_code() -> None:
    base = fingerprint("async def f(x):\n    return x + 1\n")
    assert fingerprint("async def f(x):  # doc\n\n    return (x + 1)\n") == base
    assert fingerprint("async def f(x):\n    return x + 2\n") != base


def test_source_of_a_method_is_dedented_and_placed(tmp_path) -> None:
    module = load_module("""
    class Service:
        async def run(self):
            return await nd(1)
    """, tmp_path, durable=True)
    code = module.Service.run.__code__
    source = read_source(code, module.__name__)
    assert source.text.startswith("async def run(self):")
    assert source.indent == 4
    assert source.line_of(source.function) == code.co_firstlineno
    assert source.key == f"{module.__name__}:Service.run"


# --- scope -------------------------------------------------------------------------------------
def test_scope_finds_every_binding_form() -> None:
    scope = analyse(function_node("""
    async def f(a, /, b, *args, c, **kw):
        global g
        x = y = 1
        t, *rest = [1, 2]
        obj.attr = 1
        z += 1
        w: int = 2
        [n := i for i in range(3)]
        for loop_var in []: pass
        with open(p) as handle: pass
        try: pass
        except E as err: pass
        import os.path
        from m import name as alias
        match a:
            case [p1, *ps] | {"k": p1, **ps}: pass
            case Point(x=px) as whole: pass
        def inner(q=(d := 1)): local_to_inner = 1
        class K: pass
        del gone
        g = 3
    """))
    assert scope.parameters == ("a", "b", "c", "args", "kw")
    expected = {"a", "b", "c", "args", "kw", "x", "y", "t", "rest", "z", "w", "n", "loop_var",
                "handle", "err", "os", "alias", "p1", "ps", "px", "whole", "inner", "d", "K", "gone"}
    assert scope.variables == expected
    assert scope.globals == {"g"}


def test_reserved_prefix_never_clashes() -> None:
    assert reserved_prefix("x = 1") == "_d0_"
    assert reserved_prefix("_d0_t1 = 1\n_d1_V = 2") == "_d2_"


# --- marks -------------------------------------------------------------------------------------
def test_suspension_marks_stop_at_nested_scopes() -> None:
    marks = SuspensionMarks()
    fn = function_node("""
    async def f():
        await g()
        async def nested():
            await h()
        lam = lambda: 1
        raise PauseForEventException("e")
        [await x for x in y]
        async for a in b: pass
        async with c: pass
        plain = 1
    """)
    statements = fn.body.body
    assert [marks.suspends(s) for s in statements] == [True, False, False, True, True, True, True, False]
    assert is_static_pause(statements[3].body[0])
    assert not is_static_pause(cst.parse_statement("raise ValueError('x')").body[0])


# --- lowering and code generation --------------------------------------------------------------
def test_code_without_suspension_is_one_native_block(tmp_path) -> None:
    function, _ = compiled("""
    async def main(n):
        total = 0
        for i in range(n):
            if i % 2:
                continue
            total += i
        return total
    """, tmp_path)
    assert len(function.blocks) == 1
    ops = {i.opname for i in dis.get_instructions(function.blocks[0].code)}
    assert "FOR_ITER" in ops  # the loop stayed a native loop


def test_blocks_run_as_the_users_function_at_the_users_lines(tmp_path) -> None:
    source = """
    async def main(x):
        a = await nd(x)
        def inner():
            return a
        return inner()
    """
    function, module = compiled(source, tmp_path)
    lines = Path(module.__file__).read_text().splitlines()
    for block in function.blocks:
        assert block.code.co_name == "main"
        assert block.code.co_filename == module.__file__
        for line in {p[0] for p in block.code.co_positions() if p[0]}:
            assert lines[line - 1].strip(), line  # every position is a line of the user's file
    nested = [c for b in function.blocks for c in b.code.co_consts if hasattr(c, "co_qualname")]
    assert [c.co_qualname for c in nested] == ["main.<locals>.inner"]


def test_jump_only_blocks_are_threaded_away(tmp_path) -> None:
    function, _ = compiled("""
    async def main(xs):
        for x in xs:
            if x:
                await nd(x)
        return 1
    """, tmp_path)
    for definition in function.listing.body[0].body.body[1:]:
        body = [s for s in definition.body.body
                if not (isinstance(s, cst.SimpleStatementLine) and isinstance(s.body[0], cst.Nonlocal))]
        only = body[0].body[0] if len(body) == 1 and isinstance(body[0], cst.SimpleStatementLine) else None
        is_jump = isinstance(only, cst.Return) and isinstance(only.value, cst.Integer)
        assert not is_jump, cst.Module([definition]).code


def test_evaluated_operands_are_spilled_before_a_later_await(tmp_path) -> None:
    function, _ = compiled("""
    async def main(acc):
        return len(acc) + await grow(acc)
    """, tmp_path)
    listing = function.listing.code
    spill = listing.index("= len(acc)")
    awaited = listing.index("grow(acc)")
    assert spill < awaited


def test_only_live_variables_are_saved(tmp_path) -> None:
    function, _ = compiled("""
    async def main(items):
        scratch = [i * 2 for i in items]
        total = sum(scratch)
        await nd(total)
        kept = total + 1
        f = lambda: kept
        await nd(0)
        return f()
    """, tmp_path)
    resume_points = [b for b in function.blocks if b.point and b.pc]  # 0: the start
    first, second = resume_points
    assert "scratch" not in first.live and "items" not in first.live
    assert "total" in first.live
    assert "kept" in second.live and "f" in second.live  # captured by a closure: always saved
    assert "kept" in function.captured


# --- registry ----------------------------------------------------------------------------------
def test_library_coroutines_are_not_compiled_and_user_ones_are(tmp_path) -> None:
    module = load_module("async def main():\n    return 1\n", tmp_path, durable=True)
    sleep = asyncio.sleep(0)
    assert registry.for_awaited(sleep.cr_code, sleep.cr_frame.f_globals) is None
    sleep.close()
    user = registry.for_awaited(module.main.__code__, module.__dict__)
    assert user is not None and user.key == f"{module.__name__}:main"
    assert registry.for_awaited(module.main.__code__, module.__dict__) is user


def test_equal_code_in_two_modules_is_two_functions(tmp_path) -> None:
    source = "async def main():\n    return TRACE\n"
    first = load_module(source, tmp_path, durable=True)
    second = load_module(source, tmp_path, durable=True)
    assert first.main.__code__ == second.main.__code__  # Python considers them equal
    a = registry.compiled(first.main.__code__, first.__dict__)
    b = registry.compiled(second.main.__code__, second.__dict__)
    assert a is not b and a.globals is first.__dict__ and b.globals is second.__dict__



def test_saved_closures_refer_to_their_code_instead_of_carrying_it(tmp_path) -> None:
    import types

    from durable import serialization

    module = load_module("""
    async def main():
        k = 2
        scale = lambda x: x * k
        await nd(1)
        return scale(3)
    """, tmp_path, durable=True)
    function = registry.compiled(module.main.__code__, module.__dict__)
    [lambda_code] = [c for c in function.nested_codes if c.co_name == "<lambda>"]
    closure = types.FunctionType(lambda_code, module.__dict__, None, None, (types.CellType(2),))
    blob = serialization.dumps(closure)
    restored = serialization.loads(blob)
    assert restored.__code__ is lambda_code  # the running version's code, not a copy
    assert restored(3) == 6
    assert lambda_code.co_code not in blob  # no bytecode in the saved state
