from .base import EventLog, InstanceInfo, InstanceStore, Lease, StateStore
from .disk import DiskStateStore
from .memory import InMemoryStateStore
from .sqlite import SqliteStateStore
from .urls import open_store

__all__ = ["DiskStateStore", "EventLog", "InMemoryStateStore", "InstanceInfo", "InstanceStore",
           "Lease", "SqliteStateStore", "StateStore", "open_store"]


def __getattr__(name: str) -> object:
    """``PostgresStateStore`` is imported on first use, so psycopg is needed only by its users."""
    if name == "PostgresStateStore":
        from .postgres import PostgresStateStore
        return PostgresStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
