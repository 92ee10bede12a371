"""The execution model: code blocks, frames, the call stack and the runtime that drives them."""

from .code import CodeBlock, CompiledFunction
from .frame import FunctionCall
from .runtime import DurableRuntime
from .stack import CallStack

__all__ = ["CallStack", "CodeBlock", "CompiledFunction", "DurableRuntime", "FunctionCall"]
