"""durable: make plain ``async def`` code durable. Pause, persist, resume anywhere; no replay."""

from .backends import DurableBackend, OrchestrationBackend
from .client import Client, InstanceHandle
from .compiler import DurableAstTransformer, transform_to_durable_ast
from .errors import (
    Cancelled,
    CompileError,
    DurableError,
    EventTimeout,
    FailedInstanceError,
    IncompatibleStateError,
    InstanceEndedError,
    InstanceExistsError,
    InstanceTerminated,
    LeaseLost,
    NotInDurableCode,
    PauseForEventException,
    SerializationError,
    StepInterrupted,
    StoreError,
    TooLargeError,
    UnknownInstanceError,
    UnsupportedPauseError,
    UnverifiedDataError,
)
from .primitives import (
    SKIPPED,
    ChildHandle,
    RetryPolicy,
    call_child,
    first,
    gather,
    map,
    set_status,
    sleep,
    sleep_until,
    start_child,
    step,
    wait_for_event,
)
from .program import DurableProgram, make_durable
from .runtime import CallStack, CodeBlock, DurableRuntime, FunctionCall
from .runtime.migration import MoveTo, OldFrame, migration
from .stores import DiskStateStore, InMemoryStateStore, SqliteStateStore, StateStore, open_store
from .version import __version__
from .worker import Worker

__all__ = [
    "SKIPPED",
    "CallStack",
    "Cancelled",
    "ChildHandle",
    "Client",
    "CodeBlock",
    "CompileError",
    "DiskStateStore",
    "DurableAstTransformer",
    "DurableBackend",
    "DurableError",
    "DurableProgram",
    "DurableRuntime",
    "EventTimeout",
    "FailedInstanceError",
    "FunctionCall",
    "InMemoryStateStore",
    "IncompatibleStateError",
    "InstanceEndedError",
    "InstanceExistsError",
    "InstanceHandle",
    "InstanceTerminated",
    "LeaseLost",
    "MoveTo",
    "NotInDurableCode",
    "OldFrame",
    "OrchestrationBackend",
    "PauseForEventException",
    "RetryPolicy",
    "SerializationError",
    "SqliteStateStore",
    "StateStore",
    "StepInterrupted",
    "StoreError",
    "TooLargeError",
    "UnknownInstanceError",
    "UnsupportedPauseError",
    "UnverifiedDataError",
    "Worker",
    "__version__",
    "call_child",
    "first",
    "gather",
    "make_durable",
    "map",
    "migration",
    "open_store",
    "set_status",
    "sleep",
    "sleep_until",
    "start_child",
    "step",
    "transform_to_durable_ast",
    "wait_for_event",
]


def __getattr__(name: str) -> object:
    """``PostgresStateStore`` is imported on first use, so psycopg is needed only by its users."""
    if name == "PostgresStateStore":
        from .stores.postgres import PostgresStateStore
        return PostgresStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
