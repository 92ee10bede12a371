"""durable: make plain ``async def`` code durable. Pause, persist, resume anywhere; no replay."""

from .backends import DurableBackend, OrchestrationBackend
from .compiler import DurableAstTransformer, transform_to_durable_ast
from .errors import (
    CompileError,
    DurableError,
    FailedInstanceError,
    IncompatibleStateError,
    InstanceTerminated,
    LeaseLost,
    PauseForEventException,
    SerializationError,
    StoreError,
    UnknownInstanceError,
    UnsupportedPauseError,
)
from .program import DurableProgram, make_durable
from .runtime import CallStack, CodeBlock, DurableRuntime, FunctionCall
from .stores import DiskStateStore, InMemoryStateStore, StateStore
from .version import __version__

__all__ = [
    "CallStack",
    "CodeBlock",
    "CompileError",
    "DiskStateStore",
    "DurableAstTransformer",
    "DurableBackend",
    "DurableError",
    "DurableProgram",
    "DurableRuntime",
    "FailedInstanceError",
    "FunctionCall",
    "InMemoryStateStore",
    "IncompatibleStateError",
    "InstanceTerminated",
    "LeaseLost",
    "OrchestrationBackend",
    "PauseForEventException",
    "SerializationError",
    "StateStore",
    "StoreError",
    "UnknownInstanceError",
    "UnsupportedPauseError",
    "__version__",
    "make_durable",
    "transform_to_durable_ast",
]
