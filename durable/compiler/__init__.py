"""Source -> compiled code blocks. One module per pass, in pipeline order:

source (read, parse, fingerprint) -> scope (frame variables) -> check (reject
what cannot be durable) -> rewrites (zero-argument super) -> statements and
expressions (lowering into blocks, with emitter) -> codegen (code objects with
the user's positions) -> liveness (what to save at each resume point).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import libcst as cst

from .statements import DurableAstTransformer


def transform_to_durable_ast(fn: Callable[..., Any]) -> cst.Module:
    """The rewritten source of ``fn``: its code blocks as Python, for reading and debugging."""
    from .registry import compiled

    fn = getattr(fn, "__wrapped__", fn)
    return compiled(fn.__code__, fn.__globals__).listing


__all__ = ["DurableAstTransformer", "transform_to_durable_ast"]
